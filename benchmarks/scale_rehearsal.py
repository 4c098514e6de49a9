"""Scale rehearsal: the pipeline on randomly initialised models of real shapes (Llama-3.2-1B, Llama-3.1-8B,
Qwen3-1.7B, Qwen3-8B; their config.json in benchmarks/convert_memory.py), nothing downloaded.

For one shape it measures, each stage in a fresh process so that its peak memory is its own:
- convert: on CPU, peak RSS of `linearize convert` on the base saved as an HF folder (what a CPU user
  runs); on CUDA, peak GPU memory of ``convert()`` on a base already on the GPU, sharing its storage
  (``copy=False``, as `linearize convert` does) and copying it (``copy=True``, as the main job does,
  keeping the base as teacher), each against the base's weight bytes;
- transfer and kd: the real trainer (``distill.trainer.train`` with the machine's stage defaults from
  ``distill.recipe``) on random tokens for one warm-up step and ``--steps`` measured steps: tokens/s after
  the warm-up, seconds per step, peak memory (GPU: max allocated, teacher and student included; CPU: RSS);
- largest batch (``--batch-search``): at each of ``--search-seq-lens`` (2k and 8k), the largest micro-batch
  for which one optimizer step of the stage (its objective, forward, backward, AdamW, trained parameters
  held in fp32 as the trainer holds them) fits: doubling from 1, then bisecting, out-of-memory caught. On
  GPU the limit is the device; on CPU it is ``--memory-budget`` of peak RSS (off by default there: one step
  of a 1B shape at 2k tokens takes minutes on a few cores).

The converted model follows the main job's recipe for the default target (lolcats: --decay 64 --sinks 4,
the recipe's share of softmax layers, here spread evenly: the KL ranking only chooses which layers, and
costs a calibration pass per layer). Output: a markdown table (stdout, and ``--md`` appends it) and JSON
(``--json``).

    python benchmarks/scale_rehearsal.py --shape llama-1b --device cpu --steps 2 --seq-len 128
    python benchmarks/scale_rehearsal.py --shape llama-8b --device cuda          # bf16, batch search on
    python benchmarks/scale_rehearsal.py --shape llama-1b --stages transfer,kd --deepspeed distill/configs/zero3.json
    python benchmarks/scale_rehearsal.py --bench-models DIR llama --bench-contexts 4096,16384   # largest decode batch

``--deepspeed`` runs the stages under torchrun (``--nproc`` processes) on the DeepSpeed engine, as a
multi-GPU user would. ``--bench-models`` is a separate mode: for checkpoints or bases (anything `linearize
bench` takes), the largest batch whose prefill (through the model's cache, in chunks) and decode fit at each
context, with prefill tokens/s and decode ms/token at that batch (`linearize bench` measures batch 1).
"""

import argparse
import gc
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # convert_memory beside this file (also under PYTHONSAFEPATH=1)
from convert_memory import SHAPES, base_dir, linearize_cli, make_base, peak_rss, random_base, weight_bytes  # noqa: E402

GiB = 2**30
STAGES = ("convert", "transfer", "kd")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="llama-1b", choices=list(SHAPES))
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda where available")
    p.add_argument(
        "--dtype", default="auto", help="auto (bfloat16 on cuda, float32 on cpu), bfloat16, float16, float32"
    )
    p.add_argument("--target", default="lolcats")
    p.add_argument(
        "--keep-attention",
        default=None,
        help="plan spec (default for lolcats: the main recipe's share of layers, spread evenly; else none)",
    )
    p.add_argument("--stages", default=",".join(STAGES), help="comma list of convert, transfer, kd")
    p.add_argument("--transfer-mode", default=None, help="streamed or whole (default: the stage default here)")
    p.add_argument("--steps", type=int, default=3, help="measured optimizer steps per stage, after one warm-up step")
    p.add_argument("--seq-len", type=int, default=None, help="default 1024 on cuda, 256 on cpu")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 8 on cuda, 1 on cpu)")
    p.add_argument("--batch-search", choices=["auto", "on", "off"], default="auto", help="auto: on for cuda only")
    p.add_argument("--search-seq-lens", default="2048,8192")
    p.add_argument("--max-batch", type=int, default=256, help="the batch search stops doubling here")
    p.add_argument(
        "--search-seconds",
        type=float,
        default=150.0,
        help="time for one stage's search at one length; past it the search reports its lower bound",
    )
    p.add_argument(
        "--memory-budget",
        type=float,
        default=12.0,
        help="GiB of peak RSS a batch may take on cpu (the batch search's limit there)",
    )
    p.add_argument("--deepspeed", default=None, help="a DeepSpeed config: transfer and kd run under torchrun on it")
    p.add_argument("--nproc", type=int, default=1, help="processes per torchrun (with --deepspeed)")
    p.add_argument("--bench-models", nargs="+", default=None, help="bench mode: checkpoint folders or bases")
    p.add_argument("--bench-contexts", default="4096,16384,32768,65536")
    p.add_argument("--decode-tokens", type=int, default=8)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--md", default=None, help="append the markdown table here")
    p.add_argument("--render", default=None, help="print (and --md) the tables of a saved --json result")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one stage in this process
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the children (which ignore --json, --md)
    args.command = shlex.join(["python", "benchmarks/scale_rehearsal.py", *args.argv])
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device == "cuda"
    args.dtype = ("bfloat16" if cuda else "float32") if args.dtype == "auto" else args.dtype
    args.seq_len = args.seq_len or (1024 if cuda else 256)
    args.batch_size = args.batch_size or (8 if cuda else 1)
    if args.batch_search == "auto":
        args.batch_search = "on" if cuda else "off"
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if set(args.stages) - set(STAGES):
        p.error(f"--stages takes {', '.join(STAGES)}, got {args.stages}")
    args.search_seq_lens = [int(x) for x in args.search_seq_lens.split(",") if x.strip()]
    args.bench_contexts = [int(x) for x in args.bench_contexts.split(",") if x.strip()]
    return args


def conversion_settings(args):
    """(keep_attention spec, mixer settings): the main job's recipe for its default target, else none."""
    from linearize.cli import DEFAULT_TARGET
    from linearize.pipeline import MAIN_RECIPE, recipe_keep_attention

    config = SHAPES[args.shape]
    if args.target != DEFAULT_TARGET:
        return args.keep_attention, {}
    # The main job trains without its sparse cache (training-free, applied after training).
    settings = {k: v for k, v in MAIN_RECIPE.items() if k not in ("rank_by", "sparse_cache")}
    keep = args.keep_attention
    if keep is None:  # the recipe's count (auto:N), placed evenly instead of by measured KL
        layers = config["num_hidden_layers"]
        keep = str(int(recipe_keep_attention(layers).split(":")[1]) / layers)
    return keep, settings


# ---------------------------------------------------------------- memory and time helpers


def sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


class PeakRSS:
    """The highest RSS of this process while the block runs: the kernel's high-water mark (VmHWM), reset on entry
    (Linux >= 4.0: clear_refs 5). No sampling thread: one would steal the GIL from torch's small ops. Where the
    mark cannot be reset, the process's peak so far (an upper bound)."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        # The RSS the block starts from, read after the reset: the mark can only be at or above it (an RSS read
        # earlier can be higher than this one, since the allocator returns pages in between).
        self.start = psutil_rss()
        return self

    def __exit__(self, *exc):
        status = Path("/proc/self/status").read_text()
        # The mark is kept from RSS counters the kernel syncs lazily (per thread, every few dozen page faults), so it
        # can trail an RSS read by a few pages (CI saw 24 KB below the start): the peak is at least every RSS read.
        hwm = int(status.split("VmHWM:")[1].split()[0]) * 1024
        self.peak = max(hwm, self.start, psutil_rss())


def psutil_rss():
    import psutil

    return psutil.Process().memory_info().rss


def memory_now(device):
    import torch

    return torch.cuda.memory_allocated() if device == "cuda" else psutil_rss()


def is_oom(err):
    import torch

    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def free(device):
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def largest_batch(fits, max_batch, seconds):
    """Largest b <= max_batch with fits(b): double from 1 until one does not fit, then bisect to within a
    quarter. Returns (largest that fit, smallest that did not or None, probes [(b, ok, info)], stopped early)."""
    lo, hi, probes, t0, b = 0, None, [], time.time(), 1
    while b <= max_batch and hi is None:
        ok, info = fits(b)
        probes.append((b, ok, info))
        lo, hi = (b, None) if ok else (lo, b)
        if time.time() - t0 > seconds:
            return lo, hi, probes, True
        b *= 2
    while hi is not None and hi - lo > max(1, lo // 4):
        mid = (lo + hi) // 2
        ok, info = fits(mid)
        probes.append((mid, ok, info))
        lo, hi = (mid, hi) if ok else (lo, mid)
        if time.time() - t0 > seconds:
            return lo, hi, probes, True
    return lo, hi, probes, False


# ---------------------------------------------------------------- stages (each run in its own process)


def build_models(args):
    """(teacher, student): the random base on the device and its conversion (a copy: the base stays the teacher)."""
    from linearize.api import convert

    keep, settings = conversion_settings(args)
    teacher = random_base(SHAPES[args.shape], args.dtype, args.device)
    return teacher, convert(teacher, args.target, keep_attention=keep, **settings)


def stage_convert_cuda(args):
    """Peak GPU memory of convert() on a base already on the GPU: sharing its storage, then copying it."""
    import torch

    from linearize.api import convert

    keep, settings = conversion_settings(args)
    base = random_base(SHAPES[args.shape], args.dtype, "cuda")
    base_bytes = sum({p.data_ptr(): p.numel() * p.element_size() for p in base.parameters()}.values())
    rows = []
    for copy in (False, True):
        free("cuda")
        torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        student = convert(base, args.target, keep_attention=keep, copy=copy, **settings)
        sync("cuda")
        rows.append(
            {
                "copy": copy,
                "seconds": time.time() - t0,
                "peak_bytes": torch.cuda.max_memory_allocated(),
                "ratio": torch.cuda.max_memory_allocated() / base_bytes,
            }
        )
        del student
    return {"base_bytes": base_bytes, "rows": rows}


def stage_train(args, stage):
    """One warm-up and ``--steps`` measured steps of ``stage`` through the trainer; then the batch search."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from linearize.distill.recipe import stage_config
    from linearize.distill.trainer import train

    device = args.device
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    teacher, student = build_models(args)
    free(device)
    result = {"stage": stage, "models_bytes": memory_now(device)}
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps = args.steps + 1  # the first is the warm-up
    cfg = stage_config(
        stage,
        tokens=steps * args.batch_size * world * args.seq_len,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        grad_accum=1,
        save_every=0,
        save_minutes=0,
        deepspeed=args.deepspeed,
        **({"transfer_mode": args.transfer_mode} if stage == "transfer" and args.transfer_mode else {}),
    )
    blocks = torch.randint(
        0,
        SHAPES[args.shape]["vocab_size"],
        (steps * args.batch_size * world, args.seq_len),
        generator=torch.Generator().manual_seed(0),
    )
    # Each step starts with the teacher's embedding lookup (once a step in both stages, whichever way the teacher
    # is walked) and ends with the optimizer's step (the last call, where DeepSpeed steps its sub-groups one by one).
    starts, ends = [], {}

    def on_start(module, inputs):
        sync(device)
        starts.append(time.perf_counter())

    def on_end(optimizer, a, k):
        sync(device)
        ends[len(starts) - 1] = time.perf_counter()

    hooks = [
        teacher.get_input_embeddings().register_forward_pre_hook(on_start),
        register_optimizer_step_post_hook(on_end),
    ]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    work = tempfile.mkdtemp(prefix=f"scale-{stage}-")
    try:
        with PeakRSS() as rss:
            if device != "cuda":
                result["models_bytes"] = rss.start  # what the process holds as training starts (see PeakRSS)
            student, summary, _ = train(student, teacher, blocks, cfg, work, progress=False, log=lambda line: None)
        ticks = [ends[i] for i in sorted(ends)]
        result.update(
            steps=len(ticks) - 1,
            tokens_per_step=args.batch_size * world * args.seq_len,
            step_seconds=[b - a for a, b in zip(ticks, ticks[1:])],
            warmup_seconds=ticks[0] - starts[0],
            distributed=summary["distributed"],
            config=cfg.to_dict(),
        )
        result["tokens_per_s"] = result["tokens_per_step"] * result["steps"] / (ticks[-1] - ticks[0])
        result["peak_bytes"] = torch.cuda.max_memory_allocated() if device == "cuda" else rss.peak
    except Exception as err:
        if not is_oom(err):
            raise
        result["error"] = f"out of memory at batch {args.batch_size} x {args.seq_len}"
    finally:
        for h in hooks:
            h.remove()
        shutil.rmtree(work, ignore_errors=True)
    if args.batch_search == "on" and not args.deepspeed and "error" not in result:  # (a failed run leaves LoRA in)
        free(device)
        result["search"] = batch_search(args, stage, cfg, student, teacher)
    result["host_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def batch_search(args, stage, cfg, student, teacher):
    """The largest micro-batch of one optimizer step of ``stage`` (``cfg.stage``) at each of ``--search-seq-lens``.
    The step is the trainer's, less its loop and runner: the objective the trainer builds (``build_objective``:
    the same trained parameters, held in fp32, and checkpointing)."""
    import torch

    from linearize.distill.objectives import build_objective

    device, vocab = args.device, SHAPES[args.shape]["vocab_size"]
    objective, _ = build_objective(student, teacher, cfg)
    objective.to(device).train()
    params = [p for p in objective.parameters() if p.requires_grad]
    budget = None if device == "cuda" else args.memory_budget * GiB

    def step(ids):
        optimizer = torch.optim.AdamW(params, lr=0.0)  # lr 0: the step's memory, the weights unchanged
        loss, _ = objective(ids)
        loss.backward()
        optimizer.step()

    def fits(batch, seq_len):
        ids = torch.randint(0, vocab, (batch, seq_len), device=device)
        free(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0, error = time.time(), None
        try:
            with PeakRSS() as rss:
                step(ids)
                sync(device)
        except Exception as err:  # noqa: BLE001 (only out-of-memory is expected; anything else is re-raised)
            if not is_oom(err):
                raise
            error = "out of memory"
        for p in params:
            p.grad = None
        peak = torch.cuda.max_memory_allocated() if device == "cuda" else rss.peak
        free(device)
        ok = error is None and (budget is None or peak <= budget)
        info = {
            "seconds": round(time.time() - t0, 2),
            "peak_bytes": peak if error is None else None,
            "why": error or (None if ok else f"peak RSS over the {args.memory_budget:g} GiB budget"),
        }
        print(
            f"  {stage} search: batch {batch} x {seq_len}: {'fits' if ok else 'does not fit'} {info}",
            file=sys.stderr,
            flush=True,
        )
        return ok, info

    out = []
    for seq_len in args.search_seq_lens:
        lo, hi, probes, stopped = largest_batch(lambda b: fits(b, seq_len), args.max_batch, args.search_seconds)
        best = next((info for b, ok, info in reversed(probes) if ok and b == lo), None)
        out.append(
            {
                "seq_len": seq_len,
                "largest": lo,
                "first_not_fitting": hi,
                "stopped_early": stopped,
                "peak_bytes": best and best["peak_bytes"],
                "step_seconds": best and best["seconds"],
                "probes": [{"batch": b, "fits": ok, **info} for b, ok, info in probes],
            }
        )
    return out


# ---------------------------------------------------------------- bench mode


def bench_batches(args):
    """For each model and context: the largest batch whose prefill and decode fit, and their speed at it."""
    import torch
    from transformers import DynamicCache

    from linearize.convert.load import load_model
    from linearize.evals.bench import decode

    results = []
    for spec in args.bench_models:
        model, _, name = load_model(spec, dtype=args.dtype)
        device = model.device.type
        print(
            f"bench: {name} ({model.config._attn_implementation or 'eager'} attention where softmax) on {device}",
            file=sys.stderr,
            flush=True,
        )

        @torch.no_grad()
        def run(batch, context):
            # evals.bench.prefill in a batch: chunks through the model's cache; only the last logits kept.
            ids = torch.randint(0, model.config.vocab_size, (batch, context), device=model.device)
            cache = DynamicCache(config=model.config)
            sync(device)
            t0 = time.perf_counter()
            for start in range(0, context, 2048):
                out = model(ids[:, start : start + 2048], cache=cache, use_cache=True, logits_to_keep=1)
            sync(device)
            prefill = time.perf_counter() - t0
            token = out.logits[:, -1:].argmax(-1)
            _, token = decode(model, cache, token, 2)  # warm-up
            seconds, _ = decode(model, cache, token, args.decode_tokens)
            return {
                "prefill_tokens_per_s": batch * context / prefill,
                "decode_ms_per_step": 1000 * seconds,
                "decode_tokens_per_s": batch / seconds,
            }

        def fits(batch, context):
            free(device)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                info = run(batch, context)
            except Exception as err:  # noqa: BLE001
                if not is_oom(err):
                    raise
                info = None
            free(device)
            if info is not None and device == "cuda":
                info["peak_bytes"] = torch.cuda.max_memory_allocated()
            print(f"  {name} @ {context}: batch {batch}: {info or 'out of memory'}", file=sys.stderr, flush=True)
            return info is not None, info

        rows = []
        for context in args.bench_contexts:
            lo, hi, probes, stopped = largest_batch(lambda b: fits(b, context), args.max_batch, args.search_seconds)
            at = fits(lo, context)[1] if lo else None  # measured again: the probe's first run carried warm-up
            rows.append(
                {
                    "context": context,
                    "largest": lo,
                    "first_not_fitting": hi,
                    "stopped_early": stopped,
                    "at_largest": at,
                    "batch_1": next((i for b, ok, i in probes if b == 1 and ok), None),
                }
            )
        results.append(
            {
                "name": name,
                "device": device,
                "dtype": str(model.dtype).removeprefix("torch."),
                "attn_implementation": model.config._attn_implementation,
                "rows": rows,
            }
        )
        if args.json:  # after each model: a run cut short keeps what it measured (--render)
            Path(args.json).write_text(json.dumps({"command": args.command, "bench": results}, indent=1))
        model = None  # freed before the next model
        free(device)
    return results


def bench_markdown(results, command):
    lines = [
        "| model | context | largest batch | prefill tok/s at it | decode ms/step at it | decode tok/s at it "
        "| decode ms/token at batch 1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for row in r["rows"]:
            at, one = row["at_largest"] or {}, row["batch_1"] or {}
            bound = "≥ " if row["stopped_early"] or row["first_not_fitting"] is None else ""
            lines.append(
                f"| {r['name']} | {row['context']} | {bound}{row['largest']} | "
                f"{at.get('prefill_tokens_per_s', 0):,.0f} | {at.get('decode_ms_per_step', 0):.1f} | "
                f"{at.get('decode_tokens_per_s', 0):,.0f} | {one.get('decode_ms_per_step', 0):.1f} |"
            )
    return f"    {command}\n\n" + "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the parent: one process per stage


def child_argv(args, stage, out):
    cmd = [sys.executable, str(Path(__file__).resolve()), *args.argv, "--child", stage, "--child-out", out]
    if args.deepspeed and stage != "convert":
        port = str(29500 + os.getpid() % 1000)
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(args.nproc),
            "--master_port",
            port,
            *cmd[1:],
        ]
    return cmd


def run_child(args, stage):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    try:
        proc = subprocess.run(child_argv(args, stage, out), stdout=sys.stderr)
        if proc.returncode:
            return {"stage": stage, "error": f"process exited {proc.returncode} (its output is above)"}
        return json.loads(Path(out).read_text())
    finally:
        os.unlink(out)


def convert_cpu(args):
    """Peak RSS of `linearize convert` on the base saved as an HF folder (made once, kept in the temp dir)."""
    keep, settings = conversion_settings(args)
    folder = make_base(base_dir(args.shape, args.dtype), args.dtype, SHAPES[args.shape])
    flags = [
        "--to",
        args.target,
        "--dtype",
        args.dtype,
        *[f for k, v in settings.items() for f in (f"--{k}", str(v))],
        *(["--keep-attention", keep] if keep else []),
    ]
    out = Path(tempfile.mkdtemp(prefix="scale-convert-"))
    try:
        rss, secs = peak_rss([*linearize_cli(), "convert", "--base", str(folder), "--out", str(out / "m"), *flags])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    wbytes = weight_bytes(folder)
    command = f"`linearize convert --base BASE_DIR --out OUT {' '.join(flags)}` (base saved in {args.dtype})"
    return {
        "base_bytes": wbytes,
        "rows": [{"command": command, "seconds": secs, "peak_bytes": rss, "ratio": rss / wbytes}],
    }


def gib(n):
    return f"{n / GiB:.2f} GiB" if n is not None else "–"


def markdown(args, res, command):
    cfg = SHAPES[args.shape]
    cuda = args.device == "cuda"
    mem = "GPU max allocated" if cuda else "peak RSS during the steps"
    n = res["parameters"]
    size = f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"
    lines = [
        f"### {args.shape}: {size} parameters, {args.target}, {args.dtype}, {args.device}"
        + (f", DeepSpeed {Path(args.deepspeed).stem} x{args.nproc}" if args.deepspeed else ""),
        "",
        f"    {command}",
        "",
        f"{cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, {cfg['num_attention_heads']}/"
        f"{cfg['num_key_value_heads']} heads, vocab {cfg['vocab_size']}; plan: keep attention "
        f"{res['keep_attention'] or 'none'}"
        + "".join(f", {k} {v}" for k, v in res["settings"].items())
        + f"; {res['device_name']}",
        "",
    ]
    if "convert" in res["stages"]:
        c = res["stages"]["convert"]
        lines += ["| conversion | peak memory | / base weights | seconds |", "|---|---|---|---|"]
        if "error" in c:
            lines.append(f"| failed: {c['error']} | | | |")
        for row in c.get("rows", []):
            what = row.get("command") or (
                "`convert(base, copy=False)` (storage shared, as `linearize convert`)"
                if not row["copy"]
                else "`convert(base)` (a copy: base kept as teacher)"
            )
            lines.append(
                f"| {what} | {gib(row['peak_bytes'])} ({'RSS' if 'command' in row else 'GPU'}) | "
                f"{row['ratio']:.2f}x of {gib(c['base_bytes'])} | {row['seconds']:.0f} |"
            )
        lines.append("")
    trained = [s for s in ("transfer", "kd") if s in res["stages"]]
    if trained:
        lines += [
            f"| stage | batch x seq | tokens/s (after warm-up) | s/step (mean; fastest) | warm-up s | {mem} "
            "| teacher + student | process peak RSS |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in trained:
            r = res["stages"][s]
            if "tokens_per_s" not in r:
                lines.append(f"| {s} | {args.batch_size} x {args.seq_len} | failed: {r.get('error')} | | | | | |")
                continue
            per = sum(r["step_seconds"]) / len(r["step_seconds"])
            form = r["config"].get("transfer_mode") if s == "transfer" else f"train {r['config']['train']}"
            name = f"{s} ({form})" if form else s
            lines.append(
                f"| {name} | {args.batch_size} x {args.seq_len} | {r['tokens_per_s']:,.0f} | "
                f"{per:.2f}; {min(r['step_seconds']):.2f} | "
                f"{r['warmup_seconds']:.1f} | {gib(r['peak_bytes'])} | {gib(r['models_bytes'])} | "
                f"{gib(r['host_peak_rss'])} |"
            )
        lines.append("")
    searches = [(s, row) for s in trained for row in res["stages"][s].get("search", [])]
    if searches:
        at = "GPU max allocated" if cuda else "peak RSS"
        lines += [
            f"| stage | seq len | largest batch | {at} at it | s/step at it | probes (batch: fits?) |",
            "|---|---|---|---|---|---|",
        ]
        for s, row in searches:
            bound = "≥ " if row["stopped_early"] or row["first_not_fitting"] is None else ""
            probes = ", ".join(f"{p['batch']}{'✓' if p['fits'] else '✗'}" for p in row["probes"])
            lines.append(
                f"| {s} | {row['seq_len']} | {bound}{row['largest']} | {gib(row['peak_bytes'])} | "
                f"{row['step_seconds'] or '–'} | {probes} |"
            )
        lines.append("")
    elif trained:
        lines += [
            "Largest batch: not searched ("
            + (
                "not under `--deepspeed`"
                if args.deepspeed
                else "`--batch-search off`"
                if cuda
                else "off by default on CPU: one step of this shape at 2k tokens takes minutes on a few cores; "
                f"`--batch-search on` measures it against `--memory-budget` {args.memory_budget:g} GiB of RSS"
            )
            + ").",
            "",
        ]
    return "\n".join(lines)


def render(blob):
    """The markdown of a saved result (``--json``), complete or cut short."""
    if "bench" in blob:
        return bench_markdown(blob["bench"], blob["command"])
    return markdown(parse_args(shlex.split(blob["command"])[2:]), blob, blob["command"])


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        result = stage_convert_cuda(args) if args.child == "convert" else stage_train(args, args.child)
        if int(os.environ.get("RANK", "0")) == 0:
            Path(args.child_out).write_text(json.dumps(result))
        return
    if args.render:
        blob = json.loads(Path(args.render).read_text())
    elif args.bench_models:
        blob = {"command": args.command, "bench": bench_batches(args)}
    else:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        fields = json.loads(json.dumps(SHAPES[args.shape]))  # a deep copy: transformers rewrites rope_scaling
        with torch.device("meta"):  # the parameter count, from the config alone
            meta = AutoModelForCausalLM.from_config(AutoConfig.for_model(fields.pop("model_type"), **fields))
        keep, settings = conversion_settings(args)
        blob = {
            "command": args.command,
            "shape": args.shape,
            "config": SHAPES[args.shape],
            "parameters": meta.num_parameters(),
            "device": args.device,
            "dtype": args.dtype,
            "target": args.target,
            "keep_attention": keep,
            "settings": settings,
            "seq_len": args.seq_len,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "deepspeed": args.deepspeed,
            "stages": {},
            "device_name": torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} CPU cores",
        }
        for stage in args.stages:
            print(f"[{args.shape}] {stage} ...", file=sys.stderr, flush=True)
            t0 = time.time()
            blob["stages"][stage] = (
                convert_cpu(args) if stage == "convert" and args.device == "cpu" else run_child(args, stage)
            )
            blob["stages"][stage]["wall_seconds"] = time.time() - t0
            if args.json:  # after each stage: a run cut short by a timeout keeps what it measured (--render)
                Path(args.json).write_text(json.dumps(blob, indent=1))
    table = render(blob)
    print(table)
    if args.json and not args.render:
        Path(args.json).write_text(json.dumps(blob, indent=1))
    elif not args.json and not args.render:
        print(json.dumps(blob))
    if args.md:
        with open(args.md, "a") as f:
            f.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
