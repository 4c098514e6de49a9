"""Issue #23's GPU speed run as one script: teacher (SDPA) against student in one process, bf16, random weights.

Two shapes, built on the device from their config.json (speed does not depend on the weights, so nothing is
downloaded or carried): the SmolLM2-135M shape converted with the main job's recipe (LoLCATs with decay 64 and
4 sinks, window 64, softmax kept in the 12 layers the main job's ranking keeps: 5-8, 14, 15, 17, 18, 20-23), without
its sparse cache (whose form is the reference loop) and, in the last section, with it; and the Llama-3.2-1B shape with
every layer converted to LoLCATs (default settings).

Sections, in order of value; each has its own time budget (a SIGALRM cuts it and the run goes on with the next),
and the whole run a deadline (``--seconds``):

  prefill-smollm2   prefill tokens/s at 4k, 16k, 32k, batch 1, teacher then student at each length
  profile           torch.profiler of one student prefill at 16k, batch 1 (SmolLM2 shape): the top 15 CUDA kernels
                    by total time, the top ops by CPU time, and the time per module kind (forward hooks); the
                    teacher's profile after it, where time is left
  decode-smollm2    decode ms/token at batch 1 after each prefill above (the caches kept from it)
  prefill-llama-1b  as prefill-smollm2 on the Llama-3.2-1B shape, all layers LoLCATs
  decode-llama-1b   as decode-smollm2
  long-64k          prefill at 64k, batch 1, and decode there, both shapes
  batch8            prefill at 4k, 16k, 32k, 64k, batch 8, both shapes (skipped, with the reason, where the batch-1
                    speed predicts it would not finish in the time left or where it runs out of memory)
  serving           generated tokens/s at the largest batch that fits at 32k: each sequence's cache is a copy of one
                    32k prefill (a server prefills requests one by one and decodes them together); the batch doubles
                    from 1 until a probe runs out of memory or takes longer than its cap, then N steps are timed
  graphs            optional (time left): the teacher's decode with transformers' StaticCache, eager and under
                    torch.compile(mode="reduce-overhead") (CUDA graphs); the student's own cache is not captured
  prefill-default   the main job's default as it ships, with LoLA's sparse cache of 256 keys (its reference form, a
                    loop over 64-token pieces): prefill at 4k and 16k, batch 1, teacher and student

Every measurement is warmed up first (fla autotunes each new shape on first use): the warm-up's seconds are recorded
apart; then up to 3 timed repeats (fewer when one run is slow), the median kept. Prefill is one forward of the whole
prompt through a fresh DynamicCache (``--prefill-chunk`` for chunks), logits at the last position only. Decode is
eager on the models' DynamicCache for both (transformers' cache layers, ours for the student's mixers).

Output, written as it is measured so that a cut run keeps what it has: ``OUT/gpu_speed.jsonl`` (one JSON per
measurement, skip and section end) and ``OUT/gpu_speed.md`` (the tables, printed at the end).

    python benchmarks/gpu_speed.py --out OUT                 # on a CUDA machine (scripts/gpu_speed.sh runs it)
    python benchmarks/gpu_speed.py --cpu --out OUT           # dry run: tiny shapes, short lengths, every section
    python benchmarks/gpu_speed.py --render OUT/gpu_speed.jsonl   # the tables of a saved run
"""

import argparse
import contextlib
import gc
import hashlib
import json
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # convert_memory beside this file (also under PYTHONSAFEPATH=1)
from convert_memory import LLAMA_3_2_1B, SMOLLM2_135M, tiny  # noqa: E402

GiB = 2**30
T0 = time.time()
# The main job's plan for SmolLM2-135M: the 12 layers its ranking (--rank-by kl-multikey) keeps as softmax
# (benchmarks/smollm2/main-job-cpu.txt's checkpoint, config.linearize.keep_attention).
SMOLLM2_PLAN = [5, 6, 7, 8, 14, 15, 17, 18, 20, 21, 22, 23]
LONG = 131072  # max_position_embeddings for the runs (64k prompts and their decode steps)

# (section, GPU budget in seconds). Budgets are caps: a section that finishes early leaves its time to the next.
SECTIONS = [
    ("prefill-smollm2", 70),
    ("profile", 35),
    ("decode-smollm2", 25),
    ("prefill-llama-1b", 55),
    ("decode-llama-1b", 20),
    ("long-64k", 45),
    ("batch8", 45),
    ("serving", 40),
    ("graphs", 60),
    ("prefill-default", 30),
]
CPU_BUDGET = 20  # each section's cap in the dry run
# The shapes each section measures: their models are built before its clock starts (a build cut by a section's
# budget would be redone by the next section).
NEEDS = {
    "prefill-smollm2": ["smollm2"],
    "profile": ["smollm2"],
    "decode-smollm2": ["smollm2"],
    "prefill-llama-1b": ["llama-1b"],
    "decode-llama-1b": ["llama-1b"],
    "long-64k": ["smollm2", "llama-1b"],
    "batch8": ["smollm2", "llama-1b"],
    "serving": ["smollm2", "llama-1b"],
    "graphs": ["smollm2"],
    "prefill-default": ["smollm2-cache"],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu", action="store_true", help="dry run on the CPU: tiny shapes, short lengths, every section")
    p.add_argument("--out", default=os.environ.get("OUT") or "/tmp/gpu-speed-out")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="deadline for the whole run, from the start of this process (default 300 on GPU, 120 on CPU)",
    )
    p.add_argument("--sections", default=None, help="comma list (default: all, in the order above)")
    p.add_argument(
        "--prefill-chunk", type=int, default=0, help="prefill in chunks of this many tokens (0: one forward)"
    )
    p.add_argument(
        "--full-shapes",
        action="store_true",
        help="with --cpu: the real configs (30 and 16 layers) instead of the 2-layer tiny ones",
    )
    p.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, float32 in the dry run")
    p.add_argument("--render", default=None, help="print the tables of a saved gpu_speed.jsonl and exit")
    args = p.parse_args(argv)
    names = [n for n, _ in SECTIONS]
    args.sections = names if not args.sections else [s.strip() for s in args.sections.split(",") if s.strip()]
    if set(args.sections) - set(names):
        p.error(f"--sections takes {', '.join(names)}")
    if args.seconds is None:
        args.seconds = 120.0 if args.cpu else 300.0
    if args.cpu:  # the same run, small: what the lengths stand for on the GPU is kept in the names
        args.device, args.dtype = "cpu", args.dtype or "float32"
        args.lengths = {"4k": 64, "16k": 128, "32k": 192, "64k": 256}
        args.big_batch, args.repeats, args.decode_steps, args.serve_steps = 4, 2, 2, 2
        args.max_serve_batch, args.probe_cap, args.graph_lengths = 8, 10.0, ["4k"]
    else:
        args.device, args.dtype = "cuda", args.dtype or "bfloat16"
        args.lengths = {"4k": 4096, "16k": 16384, "32k": 32768, "64k": 65536}
        args.big_batch, args.repeats, args.decode_steps, args.serve_steps = 8, 3, 16, 16
        args.max_serve_batch, args.probe_cap, args.graph_lengths = 8192, 15.0, ["4k", "32k"]
    return args


def shapes(cpu, full=False):
    """{name: how to build teacher and student}: the real configs on GPU (and with ``full``), 2-layer tiny ones in the
    dry run."""
    smol = {**SMOLLM2_135M, "max_position_embeddings": LONG}
    llama = {**LLAMA_3_2_1B, "max_position_embeddings": LONG}
    plan = SMOLLM2_PLAN
    if cpu and not full:
        smol, llama, plan = {**tiny(smol), "num_hidden_layers": 2}, {**tiny(llama), "num_hidden_layers": 2}, [1]
    from linearize.pipeline import MAIN_RECIPE

    # decay 64, sinks 4 and the sparse cache (the plan is given); "smollm2" leaves the cache out (its form is the
    # reference loop so far), "smollm2-cache" is the default as it ships
    shipped = {**{k: v for k, v in MAIN_RECIPE.items() if k != "rank_by"}, "window": 64}
    without_cache = {k: v for k, v in shipped.items() if k != "sparse_cache"}
    return {
        "smollm2": {
            "config": smol,
            "target": "lolcats",
            "keep_attention": plan,
            "settings": without_cache,
            "label": f"SmolLM2-135M shape, main recipe without its sparse cache "
            f"(softmax in {len(plan)} of {smol['num_hidden_layers']})",
        },
        "smollm2-cache": {
            "config": smol,
            "target": "lolcats",
            "keep_attention": plan,
            "settings": shipped,
            "label": f"SmolLM2-135M shape, the main recipe as it ships, with its sparse cache (reference form) "
            f"(softmax in {len(plan)} of {smol['num_hidden_layers']})",
        },
        "llama-1b": {
            "config": llama,
            "target": "lolcats",
            "keep_attention": None,
            "settings": {},
            "label": f"Llama-3.2-1B shape, all {llama['num_hidden_layers']} layers LoLCATs",
        },
    }


# ---------------------------------------------------------------- budgets, results


class SectionTimeout(BaseException):
    """A section's budget is spent. A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the
    way (ours around each measurement, or a library's) swallows it."""


@contextlib.contextmanager
def time_limit(seconds):
    """Raise SectionTimeout in this (main) thread after ``seconds``: between Python bytecodes, so a running kernel
    or a blocking synchronize finishes first."""

    def on_alarm(signum, frame):
        raise SectionTimeout(f"section budget of {seconds:.0f}s spent")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Results:
    """Records appended to OUT/gpu_speed.jsonl as they come; OUT/gpu_speed.md rewritten after each."""

    def __init__(self, out):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.jsonl, self.md = self.out / "gpu_speed.jsonl", self.out / "gpu_speed.md"
        self.jsonl.write_text("")
        self.records = []
        self.section = None

    def add(self, kind, **fields):
        rec = {"kind": kind, "section": self.section, **fields, "t": round(time.time() - T0, 1)}
        self.records.append(rec)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        self.md.write_text(render(self.records))
        print(f"[gpu_speed {rec['t']:6.1f}s] {summary(rec)}", flush=True)
        return rec


def summary(rec):
    """One line of a record for the log."""
    kind = rec["kind"]
    if kind == "prefill":
        return (
            f"{rec['section']}: prefill {rec['shape']} {rec['model']} {rec['length']} x{rec['batch']}: "
            f"{rec['tokens_per_s']:,.0f} tok/s (warm-up {rec['warmup_s']:.2f}s, runs {rec['runs_s']})"
        )
    if kind == "decode":
        return (
            f"{rec['section']}: decode {rec['shape']} {rec['model']} @{rec['length']} x{rec['batch']} "
            f"[{rec['mode']}]: {rec['ms_per_token']:.2f} ms/token"
        )
    if kind == "serving":
        return (
            f"serving {rec['shape']} {rec['model']} @{rec['length']}: batch {rec['bound']}{rec['largest']} "
            f"{rec['tokens_per_s']:,.0f} tok/s ({rec['ms_per_step']:.1f} ms/step)"
        )
    if kind == "skip":
        return f"{rec['section']}: SKIP {rec['what']}: {rec['why']}"
    if kind == "section":
        return f"=== {rec['section']} {rec['status']} in {rec['seconds']:.1f}s (budget {rec['budget_s']:.0f}s)" + (
            f": {rec['error']}" if rec.get("error") else ""
        )
    if kind == "profile":
        return (
            f"profile {rec['shape']} {rec['model']} @{rec['length']}: {rec['wall_s']:.2f}s wall, "
            f"{rec['kernels_launched']} kernels, busy {rec.get('busy_share', 0):.0%}"
        )
    if kind == "modules":
        return f"modules {rec['shape']} {rec['model']}: " + ", ".join(
            f"{m['module']} {m['share']:.0%}" for m in rec["modules"]
        )
    return json.dumps({k: v for k, v in rec.items() if k not in ("kernels", "ops", "modules")}, default=str)[:300]


# ---------------------------------------------------------------- the models


def sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def free(device, collect=False):
    """Give the allocator's cached blocks back (CUDA); ``collect``: a full garbage collection first (a few hundred
    ms with torch and transformers loaded: only where cycles may hold memory, after an error or a section)."""
    import torch

    if collect:
        gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


class Bench:
    """The models (built on first use, kept), the batch-1 caches kept for decode and serving, the speeds measured."""

    def __init__(self, args, results):
        self.args, self.res = args, results
        self.shapes = shapes(args.cpu, args.full_shapes)
        self.models = {}  # shape -> {"teacher": model, "student": model}
        self.caches = {}  # (shape, model, length) -> (cache, next token) after a batch-1 prefill
        self.speed = {}  # (shape, model, batch, length) -> prefill tokens/s (for predictions)
        self.errors = set()  # error messages already printed with their traceback

    def pair(self, shape):
        if shape not in self.models:
            import torch

            from linearize.api import convert

            from convert_memory import random_base

            s = self.shapes[shape]
            t0 = time.time()
            teacher = random_base(s["config"], self.args.dtype, self.args.device)
            if hasattr(teacher, "set_attn_implementation") and not self.args.cpu:
                teacher.set_attn_implementation("sdpa")
            student = convert(teacher, s["target"], keep_attention=s["keep_attention"], **s["settings"])
            student.eval()
            sync(self.args.device)
            self.models[shape] = {"teacher": teacher, "student": student}
            self.res.add(
                "models",
                shape=shape,
                label=s["label"],
                seconds=round(time.time() - t0, 1),
                teacher_params=teacher.num_parameters(),
                student_params=student.num_parameters(),
                attn_implementation=teacher.config._attn_implementation,
                student_softmax_layers=[i for i, layer in enumerate(student.model.layers) if i not in student.mixers()],
                settings=s["settings"],
                target=s["target"],
                dtype=str(teacher.dtype).removeprefix("torch."),
                memory_allocated_bytes=torch.cuda.memory_allocated() if self.args.device == "cuda" else None,
            )
        return self.models[shape]

    def left(self):
        return self.deadline - time.time()

    # -------------------------------------------------------- prefill

    def prefill(self, shape, model_name, length_name, batch, keep=False):
        """Warm-up, then up to ``repeats`` timed prefills; a record. Skipped where the speed measured at a shorter
        length predicts it would not finish in the section's time left. Returns tokens/s or None."""
        from linearize.evals.bench import is_oom, prefill

        args = self.args
        length = args.lengths[length_name]
        model = self.pair(shape)[model_name]
        what = f"prefill {shape} {model_name} {length_name} x{batch}"
        basis = self.basis(shape, model_name, batch, length)
        if basis:
            n, tps = basis
            predicted = batch * length / tps * max(1.0, length / n) ** 0.5  # a margin for superlinear growth
            if 2 * predicted > self.section_left():
                self.res.add(
                    "skip",
                    what=what,
                    why=f"predicted {predicted:.0f}s a run (from {tps:,.0f} tok/s at "
                    f"{n} tokens x{batch if (shape, model_name, batch, n) in self.speed else 1}) x 2 "
                    f"(warm-up + run) > {self.section_left():.0f}s left in the section",
                )
                return None
        oom = None
        try:
            t0 = time.time()
            cache, token, row = prefill(model, length, args.prefill_chunk, batch=batch, fresh=False)
            warm = time.time() - t0
            runs = []
            for i in range(args.repeats):
                if i and (
                    self.section_left() < 3 * row["prefill_seconds"]
                    or (i >= 1 and row["prefill_seconds"] > 8)
                    or (i >= 2 and row["prefill_seconds"] > 3)
                ):
                    break  # one or two runs where a run is slow
                del cache, token
                cache, token, row = prefill(model, length, args.prefill_chunk, batch=batch, fresh=False)
                runs.append(row)
        except Exception as err:  # noqa: BLE001
            if not is_oom(err):
                raise
            oom = str(err).splitlines()[0][:120]
        if oom is not None:  # out of the except block: its traceback no longer holds the run's tensors
            cache = token = None
            free(args.device, collect=True)
            self.res.add("skip", what=what, why=f"out of memory ({oom})")
            return None
        tps = statistics.median(r["prefill_tokens_per_s"] for r in runs)
        self.speed[(shape, model_name, batch, length)] = tps
        if keep and batch == 1:
            self.caches[(shape, model_name, length_name)] = (cache, token)
        del cache
        self.res.add(
            "prefill",
            shape=shape,
            model=model_name,
            length=length_name,
            tokens=length,
            batch=batch,
            tokens_per_s=tps,
            warmup_s=round(warm, 3),
            runs_s=[round(r["prefill_seconds"], 3) for r in runs],
            peak_memory_bytes=row["peak_memory_bytes"],
            peak_memory_added_bytes=row.get("peak_memory_added_bytes"),
            cache_bytes=row["cache_bytes"],
            prefill_chunk=args.prefill_chunk or None,
        )
        free(args.device)
        return tps

    def basis(self, shape, model_name, batch, length):
        """(length, tokens/s) measured that best predicts a prefill: the longest at this batch, else batch 1 at this
        length or the longest at batch 1; None before any."""
        same = {n: v for (s, m, b, n), v in self.speed.items() if (s, m, b) == (shape, model_name, batch)}
        if same:
            return max(same.items())
        one = {n: v for (s, m, b, n), v in self.speed.items() if (s, m, b) == (shape, model_name, 1)}
        if length in one:
            return length, one[length]
        return max(one.items()) if one else None

    # -------------------------------------------------------- decode

    def prefilled(self, shape, model_name, length_name):
        """(model, cache, token): the batch-1 prefill at ``length_name``, made untimed on first use and kept."""
        from linearize.evals.bench import prefill

        model = self.pair(shape)[model_name]
        key = (shape, model_name, length_name)
        if key not in self.caches:
            cache, token, _ = prefill(model, self.args.lengths[length_name], self.args.prefill_chunk, fresh=False)
            self.caches[key] = (cache, token)
        return (model, *self.caches[key])

    def decode(self, shape, model_name, length_name, steps=None, repeats=None):
        """Decode ms/token at batch 1 on the cache kept from the prefill at ``length_name`` (made untimed if
        absent)."""
        from linearize.evals.bench import decode

        args = self.args
        steps, repeats = steps or args.decode_steps, repeats or args.repeats
        model, cache, token = self.prefilled(shape, model_name, length_name)
        seconds, token = decode(model, cache, token, 2)  # warm-up
        times = []
        for _ in range(repeats):
            s, token = decode(model, cache, token, steps)
            times.append(s)
        self.caches[(shape, model_name, length_name)] = (cache, token)
        self.res.add(
            "decode",
            shape=shape,
            model=model_name,
            length=length_name,
            tokens=args.lengths[length_name],
            batch=1,
            mode="eager, DynamicCache",
            ms_per_token=1000 * statistics.median(times),
            ms_all=[round(1000 * t, 3) for t in times],
            steps=steps,
            warmup_ms=round(1000 * seconds, 3),
        )

    def drop_caches(self, keep=()):
        for key in [k for k in self.caches if k[2] not in keep]:
            del self.caches[key]
        free(self.args.device, collect=True)

    # -------------------------------------------------------- profile

    def profile(self, shape, model_name, length_name):
        """One prefill under torch.profiler (CUDA kernels on GPU, CPU ops always), then one under forward hooks
        that time each module kind (synchronising around each)."""
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        from linearize.evals.bench import prefill

        args = self.args
        model = self.pair(shape)[model_name]
        length = args.lengths[length_name]
        if (shape, model_name, 1, length) not in self.speed:  # not warmed up by the prefill section
            prefill(model, length, args.prefill_chunk, fresh=False)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
        sync(args.device)
        t0 = time.perf_counter()
        with profile(activities=activities) as prof:
            prefill(model, length, args.prefill_chunk, fresh=False)
            sync(args.device)
        wall = time.perf_counter() - t0
        events = prof.key_averages()
        cuda = [e for e in events if e.device_type == DeviceType.CUDA]
        cpu = [e for e in events if e.device_type == DeviceType.CPU]
        kernels = sorted(cuda, key=lambda e: e.self_device_time_total, reverse=True)
        busy = sum(e.self_device_time_total for e in cuda) / 1e6
        ops = sorted((e for e in cpu if e.key.startswith("aten::")), key=lambda e: e.self_cpu_time_total, reverse=True)
        rec = {
            "shape": shape,
            "model": model_name,
            "length": length_name,
            "tokens": length,
            "wall_s": wall,
            "kernels_launched": sum(e.count for e in cuda),
            "aten_ops": sum(e.count for e in cpu if e.key.startswith("aten::")),
            "kernels": [
                {"name": e.key[:300], "total_ms": e.self_device_time_total / 1e3, "calls": e.count}
                for e in kernels[:15]
            ],
            "ops": [
                {
                    "name": e.key,
                    "self_cpu_ms": e.self_cpu_time_total / 1e3,
                    "calls": e.count,
                    "device_ms": e.device_time_total / 1e3,
                }
                for e in ops[:10]
            ],
        }
        tps = self.speed.get((shape, model_name, 1, length))
        if tps:
            rec["unprofiled_s"] = length / tps  # the same prefill's median time without the profiler
        if args.device == "cuda":
            rec["busy_s"], rec["busy_share"] = busy, busy / rec.get("unprofiled_s", wall)
            if not cuda:
                rec["note"] = "no CUDA kernel events (CUPTI unavailable here?): see the ops and module tables"
        (self.res.out / f"profile_{shape}_{model_name}.txt").write_text(
            events.table(
                sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                row_limit=60,
                max_name_column_width=100,
            )
        )
        self.res.add("profile", **rec)
        self.res.add(
            "modules",
            shape=shape,
            model=model_name,
            length=length_name,
            tokens=length,
            modules=self.module_times(model, length),
        )

    def module_times(self, model, length):
        """Seconds per module kind in one prefill: forward hooks that synchronise before and after each module."""
        from linearize.evals.bench import prefill

        device = self.args.device
        mixers = model.mixers() if hasattr(model, "mixers") else {}
        totals, hooks, starts = {}, [], {}

        def kind(i, name):
            if name == "mlp":
                return "mlp"
            return f"{type(mixers[i]).__name__} (window+linear)" if i in mixers else "softmax attention (SDPA)"

        for i, layer in enumerate(model.model.layers):
            for name in ("self_attn", "mlp"):
                module, k = getattr(layer, name), kind(i, name)

                def pre(mod, inputs, k=k):
                    sync(device)
                    starts[k] = time.perf_counter()

                def post(mod, inputs, output, k=k):
                    sync(device)
                    totals[k] = totals.get(k, 0.0) + time.perf_counter() - starts[k]

                hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        try:
            sync(device)
            t0 = time.perf_counter()
            prefill(model, length, self.args.prefill_chunk, fresh=False)
            wall = time.perf_counter() - t0
        finally:
            for h in hooks:
                h.remove()
        out = [{"module": k, "seconds": v, "share": v / wall} for k, v in sorted(totals.items(), key=lambda kv: -kv[1])]
        out.append(
            {
                "module": "rest (embeddings, norms, lm_head, masks, Python)",
                "seconds": wall - sum(totals.values()),
                "share": 1 - sum(totals.values()) / wall,
            }
        )
        return out

    # -------------------------------------------------------- serving throughput

    def serving(self, shape, model_name, length_name, deadline):
        """Largest batch whose decode fits at ``length_name`` (each sequence a copy of one batch-1 prefill), doubling
        from 1; then ``serve_steps`` decode steps timed at it: generated tokens/s (``evals.bench.serving``)."""
        from linearize.evals.bench import serving

        args = self.args
        model, cache, token = self.prefilled(shape, model_name, length_name)
        row = serving(
            model,
            cache,
            token,
            steps=args.serve_steps,
            max_batch=args.max_serve_batch,
            probe_seconds=args.probe_cap,
            deadline=deadline,
            log=lambda line: print(f"[gpu_speed] {shape} {model_name}{line}", flush=True),
        )
        what = f"serving {shape} {model_name} {length_name}"
        if not row.get("tokens_per_s"):
            self.res.add("skip", what=what, why=f"no batch fits ({row['stopped_by']})")
            return
        self.res.add(
            "serving",
            shape=shape,
            model=model_name,
            length=length_name,
            tokens=args.lengths[length_name],
            bound="" if row["first_not_fitting"] else "≥ ",
            mode="eager, DynamicCache; caches copied from one prefill",
            **{k: v for k, v in row.items() if k != "batch"},
        )

    # -------------------------------------------------------- graphs (teacher only)

    def graphs(self, shape, length_name):
        """The teacher's decode on transformers' StaticCache: eager, then torch.compile(mode='reduce-overhead')
        (CUDA graphs; on CPU the dry run traces with backend='eager' instead)."""
        import torch
        from transformers import StaticCache

        args = self.args
        model = self.pair(shape)["teacher"]
        length, steps = args.lengths[length_name], args.decode_steps
        ids = torch.randint(0, model.config.vocab_size, (1, length), device=model.device)
        cache = StaticCache(config=model.config, max_cache_len=length + 2 * (args.repeats + 2) * steps + 16)
        with torch.no_grad():
            token = model(ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)
        position = [length]

        def run(fn, n):
            nonlocal token
            sync(args.device)
            t0 = time.perf_counter()
            with torch.no_grad():
                for _ in range(n):
                    pos = torch.tensor([[position[0]]], device=model.device)
                    token = (
                        fn(input_ids=token, cache=cache, use_cache=True, position_ids=pos, logits_to_keep=1)
                        .logits[:, -1:]
                        .argmax(-1)
                    )
                    position[0] += 1
            sync(args.device)
            return (time.perf_counter() - t0) / n

        modes = [("eager, StaticCache", model)]
        if args.cpu:
            modes.append(
                ("torch.compile(backend='eager') [dry run], StaticCache", torch.compile(model, backend="eager"))
            )
        else:
            modes.append(
                (
                    "torch.compile(mode='reduce-overhead') (CUDA graphs), StaticCache",
                    torch.compile(model, mode="reduce-overhead"),
                )
            )
        for mode, fn in modes:
            t0 = time.time()
            run(fn, 3)  # warm-up: compiles and captures
            warm = time.time() - t0
            times = [run(fn, steps) for _ in range(args.repeats)]
            self.res.add(
                "decode",
                shape=shape,
                model="teacher",
                length=length_name,
                tokens=length,
                batch=1,
                mode=mode,
                ms_per_token=1000 * statistics.median(times),
                ms_all=[round(1000 * t, 3) for t in times],
                steps=steps,
                warmup_s=round(warm, 2),
            )
        cache = None  # freed before the next model
        free(args.device)

    # -------------------------------------------------------- sections

    def section_left(self):
        return self.section_end - time.time()

    def run_section(self, name, budget):
        args = self.args
        budget = min(budget, self.left() - 2)
        self.res.section = name
        if budget < (3 if args.cpu else 8) or (name == "graphs" and budget < (3 if args.cpu else 25)):
            self.res.add(
                "section",
                status="skipped",
                why="no time left before the run's deadline",
                seconds=0.0,
                budget_s=max(budget, 0),
            )
            return
        t0, status, error, built = time.time(), "done", None, 0.0
        try:
            with time_limit(max(self.left() - 2, 0.01)):  # the models: bounded by the run's deadline alone
                for shape in NEEDS[name]:
                    self.pair(shape)
            built, t0 = time.time() - t0, time.time()
            budget = min(budget, self.left() - 2)
            self.section_end = time.time() + budget
            with time_limit(max(budget, 0.01)):
                getattr(self, "section_" + name.replace("-", "_"))()
        except SectionTimeout as err:
            status, error = "cut", str(err)
        except Exception as err:  # noqa: BLE001 (one section's failure must not end the run)
            status, error = "failed", f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
            traceback.print_exc()
        with contextlib.suppress(Exception):
            sync(args.device)
            free(args.device, collect=True)
        self.res.add(
            "section",
            status=status,
            error=error,
            seconds=time.time() - t0,
            budget_s=budget,
            models_built_s=round(built, 1) if built >= 0.05 else None,
        )

    def attempt(self, what, fn, *a, **k):
        """One measurement: an error other than the budget's is recorded and the section goes on with the next
        (a failing student must not cost the teacher's numbers)."""
        try:
            return fn(*a, **k)
        except Exception as err:  # noqa: BLE001
            message = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
            if message not in self.errors:
                traceback.print_exc()
        self.errors.add(message)  # out of the except block: its traceback's frames (and their tensors) are gone
        free(self.args.device, collect=True)
        self.res.add("skip", what=what, why=f"error: {message}")
        return None

    def pairs(self, shape, length_names, batch, keep):
        for name in length_names:
            for model in ("teacher", "student"):
                self.attempt(f"prefill {shape} {model} {name} x{batch}", self.prefill, shape, model, name, batch, keep)

    def decodes(self, shape, length_names):
        for name in length_names:
            for model in ("teacher", "student"):
                self.attempt(f"decode {shape} {model} {name}", self.decode, shape, model, name)

    def section_prefill_smollm2(self):
        self.pairs("smollm2", ["4k", "16k", "32k"], 1, keep=True)

    def section_profile(self):
        for model in ("student", "teacher"):
            self.attempt(f"profile smollm2 {model} 16k", self.profile, "smollm2", model, "16k")

    def section_decode_smollm2(self):
        self.decodes("smollm2", ["4k", "16k", "32k"])

    def section_prefill_llama_1b(self):
        self.pairs("llama-1b", ["4k", "16k", "32k"], 1, keep=True)

    def section_decode_llama_1b(self):
        self.decodes("llama-1b", ["4k", "16k", "32k"])
        self.drop_caches(keep=("32k",))  # serving needs the 32k ones

    def section_long_64k(self):
        for shape in ("smollm2", "llama-1b"):
            self.pairs(shape, ["64k"], 1, keep=True)
            for model in ("teacher", "student"):  # where its 64k prefill ran (no untimed one here)
                if (shape, model, "64k") in self.caches:
                    self.attempt(f"decode {shape} {model} 64k", self.decode, shape, model, "64k")
            self.drop_caches(keep=("32k",))

    def section_batch8(self):
        for shape in ("smollm2", "llama-1b"):
            self.pairs(shape, ["4k", "16k", "32k", "64k"], self.args.big_batch, keep=False)

    def section_serving(self):
        runs = [(shape, model) for shape in ("smollm2", "llama-1b") for model in ("teacher", "student")]
        for i, (shape, model) in enumerate(runs):
            share = self.section_left() / (len(runs) - i)  # each its share of what is left: no search eats the rest
            self.attempt(f"serving {shape} {model} 32k", self.serving, shape, model, "32k", time.time() + share - 2)
        self.drop_caches()

    def section_graphs(self):
        self.drop_caches()
        for name in self.args.graph_lengths:
            self.attempt(f"graphs smollm2 teacher {name}", self.graphs, "smollm2", name)

    def section_prefill_default(self):
        self.pairs("smollm2-cache", ["4k", "16k"], 1, keep=False)

    def run(self):

        self.deadline = T0 + self.args.seconds
        self.res.section = "env"
        self.res.add("env", **environment(self.args))
        for name, budget in SECTIONS:
            if name in self.args.sections:
                self.run_section(name, CPU_BUDGET if self.args.cpu else budget)
        self.res.section = None


def environment(args):
    import importlib.metadata as md

    import torch

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    root = HERE.parent
    digest = hashlib.sha1()
    for p in sorted((root / "kernels").rglob("*.py")) + sorted((root / "convert").glob("*mixer*.py")):
        digest.update(p.read_bytes())
    return {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "dtype": args.dtype,
        "dry_run": args.cpu,
        "python": platform.python_version(),
        "versions": {
            n: version(n)
            for n in ("torch", "triton", "transformers", "flash-linear-attention", "fla-core", "linearize")
        },
        "kernels_sha1": digest.hexdigest()[:12],
        "lengths": args.lengths,
        "big_batch": args.big_batch,
        "deadline_s": args.seconds,
        "sections": args.sections,
        "prefill_chunk": args.prefill_chunk or None,
    }


# ---------------------------------------------------------------- markdown


def _gib(n):
    return f"{n / GiB:.2f}" if n is not None else "–"


def _num(x, fmt):
    return format(x, fmt) if x is not None else "–"


def _ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "–"


def acceptance(records):
    """Issue #23's GPU acceptance points, each with what this run measured (student / teacher)."""

    def ratio(kind, shape, length, key, batch=1, mode="eager, DynamicCache"):
        got = {
            r["model"]: r.get(key)
            for r in records
            if r["kind"] == kind
            and r["shape"] == shape
            and r["length"] == length
            and r.get("batch", 1) == batch
            and (kind != "decode" or r["mode"] == mode)
        }
        if got.get("student") and got.get("teacher"):
            return got["student"] / got["teacher"]
        return None

    points = [
        (
            "SmolLM2 default plan: prefill at 4k, batch 1, >= 1.0x",
            ratio("prefill", "smollm2", "4k", "tokens_per_s"),
            1.0,
        ),
        (
            "SmolLM2 default plan: prefill at 32k, batch 1, >= 2x",
            ratio("prefill", "smollm2", "32k", "tokens_per_s"),
            2.0,
        ),
        (
            "Llama-3.2-1B all LoLCATs: prefill at 32k, batch 1, >= 4x",
            ratio("prefill", "llama-1b", "32k", "tokens_per_s"),
            4.0,
        ),
        (
            "SmolLM2 default plan: serving at 32k, largest batch, >= 3x",
            ratio("serving", "smollm2", "32k", "tokens_per_s"),
            3.0,
        ),
        (
            "Llama-3.2-1B all LoLCATs: serving at 32k, largest batch, >= 8x",
            ratio("serving", "llama-1b", "32k", "tokens_per_s"),
            8.0,
        ),
    ]
    lines = ["## Issue #23's acceptance points (student / teacher, this run)", ""]
    for text, value, need in points:
        lines.append(
            f"- {text}: "
            + ("not measured" if value is None else f"{value:.2f}x ({'met' if value >= need else 'NOT met'})")
        )
    for shape in ("smollm2", "llama-1b"):
        decode = {
            r["length"]: ratio("decode", shape, r["length"], "ms_per_token")
            for r in records
            if r["kind"] == "decode" and r["shape"] == shape and r["mode"] == "eager, DynamicCache"
        }
        decode = {k: v for k, v in decode.items() if v is not None}
        if decode:
            lines.append(
                f"- {shape}: decode ms/token at batch 1, student / teacher (<= 1.0x asked, with CUDA graphs for "
                "both; these are eager): " + ", ".join(f"{k} {v:.2f}x" for k, v in decode.items())
            )
    return lines + [""]


def render(records):
    """The run's tables, from its records (complete or cut short)."""
    env = next((r for r in records if r["kind"] == "env"), {})
    lines = [
        "# GPU speed: teacher (SDPA) vs student"
        + (" — CPU DRY RUN (tiny shapes; no number means anything)" if env.get("dry_run") else ""),
        "",
    ]
    if env:
        v = env["versions"]
        lines += [
            f"{env['device']}, {env['dtype']}; python {env['python']}, "
            + ", ".join(f"{k} {v[k]}" for k in v if v[k])
            + f"; kernels/ + mixers sha1 {env['kernels_sha1']}; "
            f"lengths {env['lengths']}; prefill "
            + (f"in chunks of {env['prefill_chunk']}" if env.get("prefill_chunk") else "one forward")
            + ", logits at the last position",
            "",
        ]
    for r in records:
        if r["kind"] == "models":
            lines.append(
                f"- {r['shape']}: {r['label']}; {r['teacher_params'] / 1e6:.1f}M -> {r['student_params'] / 1e6:.1f}M "
                f"parameters; {r['target']} {r['settings']}; softmax layers {r['student_softmax_layers']}; "
                f"teacher attention {r['attn_implementation']}; built in {r['seconds']}s"
            )
    lines.append("")
    lines += acceptance(records)
    pre = {(r["shape"], r["model"], r["length"], r["batch"]): r for r in records if r["kind"] == "prefill"}
    if pre:
        lines += [
            "## Prefill (tokens/s; median of the timed runs after a warm-up)",
            "",
            "| shape | length | batch | teacher tok/s | student tok/s | student / teacher | teacher warm-up s; runs s "
            "| student warm-up s; runs s | peak GiB added (teacher; student) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        keys = sorted(
            {(s, n, b) for s, _, n, b in pre},
            key=lambda k: (k[0] != "smollm2", k[2], env.get("lengths", {}).get(k[1], 0), k[0]),  # a set: ties sorted
        )
        for s, n, b in keys:
            t, st = pre.get((s, "teacher", n, b), {}), pre.get((s, "student", n, b), {})

            def runs(r):
                return f"{r['warmup_s']:.2f}; {', '.join(f'{x:.2f}' for x in r['runs_s'])}" if r else "–"

            lines.append(
                f"| {s} | {n} | {b} | {_num(t.get('tokens_per_s'), ',.0f')} | {_num(st.get('tokens_per_s'), ',.0f')} | "
                f"{_ratio(st.get('tokens_per_s'), t.get('tokens_per_s'))} | {runs(t)} | {runs(st)} | "
                f"{_gib(t.get('peak_memory_added_bytes'))}; {_gib(st.get('peak_memory_added_bytes'))} |"
            )
        lines.append("")
    dec = [r for r in records if r["kind"] == "decode"]
    if dec:
        lines += [
            "## Decode at batch 1 (ms/token; median of the repeats after 2 warm-up steps)",
            "",
            "| shape | length | mode | teacher ms/token | student ms/token | student / teacher |",
            "|---|---|---|---|---|---|",
        ]
        by = {(r["shape"], r["model"], r["length"], r["mode"]): r for r in dec}
        for s, n, mode in dict.fromkeys((r["shape"], r["length"], r["mode"]) for r in dec):
            t, st = by.get((s, "teacher", n, mode), {}), by.get((s, "student", n, mode), {})
            lines.append(
                f"| {s} | {n} | {mode} | {_num(t.get('ms_per_token'), '.2f')} | "
                f"{_num(st.get('ms_per_token'), '.2f')} | {_ratio(st.get('ms_per_token'), t.get('ms_per_token'))} |"
            )
        lines.append("")
    srv = [r for r in records if r["kind"] == "serving"]
    if srv:
        lines += [
            "## Serving throughput at the largest batch (decode; each sequence's cache a copy of one prefill)",
            "",
            "| shape | model | length | largest batch | generated tok/s | ms/step | cache MiB per sequence | "
            "GPU max allocated GiB | stopped by |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in srv:
            lines.append(
                f"| {r['shape']} | {r['model']} | {r['length']} | {r['bound']}{r['largest']} | "
                f"{r['tokens_per_s']:,.0f} | {r['ms_per_step']:.1f} | {r['cache_bytes_per_sequence'] / 2**20:.1f} | "
                f"{_gib(r['peak_memory_bytes'])} | {r['stopped_by']} |"
            )
        for s in dict.fromkeys(r["shape"] for r in srv):
            t = next((r for r in srv if r["shape"] == s and r["model"] == "teacher"), None)
            st = next((r for r in srv if r["shape"] == s and r["model"] == "student"), None)
            if t and st:
                lines.append(f"\n{s}: student / teacher throughput {_ratio(st['tokens_per_s'], t['tokens_per_s'])}")
        lines.append("")
    for r in (r for r in records if r["kind"] == "profile"):
        lines += [
            f"## Profile: {r['shape']} {r['model']} prefill at {r['length']} ({r['tokens']} tokens), batch 1",
            "",
            f"{r['wall_s']:.3f}s wall under the profiler"
            + (f", {r['unprofiled_s']:.3f}s without it" if r.get("unprofiled_s") else "")
            + f"; {r['kernels_launched']} CUDA kernels launched, {r['aten_ops']} aten ops"
            + (
                f"; kernels busy {r['busy_s']:.3f}s = {r['busy_share']:.0%} of the "
                + ("unprofiled" if r.get("unprofiled_s") else "profiled")
                + " time"
                if "busy_s" in r
                else ""
            )
            + (f". {r['note']}" if r.get("note") else ""),
            "",
        ]
        if r["kernels"]:
            total = sum(k["total_ms"] for k in r["kernels"])
            lines += ["| # | CUDA kernel | total ms | calls | ms/call |", "|---|---|---|---|---|"]
            for i, k in enumerate(r["kernels"], 1):
                lines.append(
                    f"| {i} | `{k['name'][:110]}` | {k['total_ms']:.2f} | {k['calls']} | "
                    f"{k['total_ms'] / max(k['calls'], 1):.4f} |"
                )
            lines += [f"\n(top 15: {total:.1f} ms)", ""]
        lines += ["| op (CPU side) | self CPU ms | calls | device ms under it |", "|---|---|---|---|"]
        lines += [f"| `{o['name']}` | {o['self_cpu_ms']:.2f} | {o['calls']} | {o['device_ms']:.2f} |" for o in r["ops"]]
        lines.append("")
        for m in (
            m for m in records if m["kind"] == "modules" and (m["shape"], m["model"]) == (r["shape"], r["model"])
        ):
            lines += [
                f"Time per module kind, one more prefill ({m['model']}, forward hooks synchronising around each "
                "module):",
                "",
                "| module kind | seconds | share of the prefill |",
                "|---|---|---|",
            ]
            lines += [f"| {x['module']} | {x['seconds']:.3f} | {x['share']:.0%} |" for x in m["modules"]]
            lines.append("")
    skips = [r for r in records if r["kind"] == "skip"]
    if skips:
        lines += ["## Not measured", ""] + [f"- {r['section']}: {r['what']}: {r['why']}" for r in skips] + [""]
    secs = [r for r in records if r["kind"] == "section"]
    if secs:
        lines += [
            "## Sections",
            "",
            "| section | status | seconds | budget s | models built first, s | note |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['section']} | {r['status']} | {r['seconds']:.1f} | {r['budget_s']:.0f} | "
            f"{r.get('models_built_s') or ''} | {r.get('error') or r.get('why') or ''} |"
            for r in secs
        ]
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.render:
        print(render([json.loads(line) for line in Path(args.render).read_text().splitlines() if line.strip()]))
        return 0
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu for a dry run", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    if args.cpu:
        torch.set_num_threads(1)  # tiny shapes: one thread does not spin against a loaded machine's other work
    res = Results(args.out)
    Bench(args, res).run()
    print("\n" + res.md.read_text(), flush=True)
    print(f"[gpu_speed] {time.time() - T0:.0f}s; {res.jsonl} and {res.md}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
