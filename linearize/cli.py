"""The command line: ``linearize VERB ...``, and ``linearize --base BASE`` for the main job.

User errors print one line, ``linearize: error: ...``, exit with code 2 and leave nothing behind:
the output is written to a temporary folder beside --out and renamed into place at the end.
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from linearize.errors import LinearizeError, SettingError

DEFAULT_TARGET = "lolcats"  # the main job's target; pipeline.MAIN_RECIPE holds its other defaults


class UserError(LinearizeError):
    """A bad command line (a flag's value, a missing file)."""


def _fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def _stage(i, total, text):
    print(f"[{i}/{total}] {text}", file=sys.stderr, flush=True)


def check_out(out, overwrite):
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"--out {str(out)!r} exists and is not empty; pass --overwrite to replace it")
    return out


def run_convert(settings, out, overwrite=False, dtype="auto"):
    """Convert ``settings.base`` (a ``ConvertSettings``) loaded in ``dtype`` (see ``--dtype``) and write the checkpoint
    (with tokenizer, its weights in that dtype) to ``out``; returns a summary dict."""
    from linearize.convert.bases import load_base, load_config, load_tokenizer, resolve_dtype
    from linearize.convert.convert import check_target, convert, new_parameter_count
    from linearize.convert.plan import parse_keep_attention
    from linearize.convert.save import save_atomic

    base, target, keep_attention = settings.base, settings.target, settings.keep_attention
    dtype = resolve_dtype(dtype)
    out = check_out(out, overwrite)
    check_target(target)
    t0 = time.time()
    _stage(1, 4, f"resolving base {base!r}")
    _, config = load_config(base)
    parse_keep_attention(keep_attention, config.num_hidden_layers)  # fail before loading any weights
    _stage(2, 4, f"loading {config.model_type} base ({config.num_hidden_layers} layers) in {_dtype_name(dtype)}")
    model = load_base(base, dtype=dtype)
    tokenizer = load_tokenizer(base)
    _stage(3, 4, f"converting to {target}")
    # The base is not used again here: the converted model takes its tensors instead of copying them.
    student = convert(
        model,
        target,
        keep_attention=keep_attention,
        base_name=str(base),
        tokenizer=tokenizer,
        copy=False,
        **settings.mixer_settings(),
    )
    _stage(4, 4, f"saving to {out}")
    if tokenizer is None:
        print("note: the base has no tokenizer; the checkpoint is saved without one", file=sys.stderr)
    save_atomic(student, tokenizer, out)
    state, kv = student.cache_bytes(4096)
    return {
        "out": str(out),
        "target": target,
        "dtype": _dtype_name(dtype),
        "layers_converted": len(student.mixers()),
        "layers": config.num_hidden_layers,
        "kept_attention": student.config.linearize["keep_attention"],
        "parameters_added": new_parameter_count(student),
        "state_bytes_4k": state,
        "kv_bytes_4k": kv,
        "seconds": time.time() - t0,
        "plan_evidence": student.config.linearize.get("plan_evidence"),
        "mixers": student.config.mixers,
    }


def print_summary(s):
    evidence = s.get("plan_evidence")
    if evidence and evidence["method"] == "kl":
        what = {
            "kl-recall": "at the answers of retrieval probes",
            "kl-multikey": "at the answers of retrieval probes with 3 distractor facts each",
            "kl-mix": "its share of the total on prose plus its share at the answers of retrieval probes",
        }.get(evidence.get("ranked_by"), "over every token")
        print(
            f"KL from the base with only that layer converted, {what} ({evidence['samples'][0]} calibration samples "
            f"of {evidence['samples'][1]} tokens; the highest keep softmax attention):"
        )
        for i, kl in enumerate(evidence["kl"]):
            print(f"  layer {i:>3d}  {kl:.4f}{'  kept' if i in evidence['kept_layers'] else ''}")
    elif evidence:
        import torch

        from linearize.convert.calibration import recency_table

        print(
            f"attention recency (share of mass on the last {evidence['window']} tokens; "
            f"{evidence['samples'][0]} calibration samples of {evidence['samples'][1]} tokens"
            + (f"; * = at or above {evidence['threshold']}, becomes a Mamba head" if "threshold" in evidence else "")
            + "):"
        )
        print(recency_table(torch.tensor(evidence["recency"]), evidence.get("threshold")))
    if s["target"] == "recurformer":
        heads = sum(len(m["mamba_heads"]) for m in s["mixers"] if m)
        total = s["layers"] * len(evidence["recency"][0])
        print(
            f"mamba heads: {heads}/{total}; KV-cache reduction at 4k tokens: "
            f"{1 - s['state_bytes_4k'] / s['kv_bytes_4k']:.1%} (state and remaining KV vs the base's KV)"
        )
    print(
        f"converted {s['layers_converted']}/{s['layers']} layers to {s['target']}"
        + (f" (softmax attention kept in {s['kept_attention']})" if s["kept_attention"] else "")
    )
    print(f"parameters added: {s['parameters_added']:,}")
    ratio = s["kv_bytes_4k"] / max(s["state_bytes_4k"], 1)
    print(
        f"decode state per sequence at 4k tokens: {_fmt_bytes(s['state_bytes_4k'])} "
        f"vs {_fmt_bytes(s['kv_bytes_4k'])} KV cache ({ratio:.1f}x smaller)"
    )
    print(f"saved to {s['out']} ({s['dtype']}) in {s['seconds']:.1f}s")


def _dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def add_dtype_arg(p):
    p.add_argument(
        "--dtype",
        default="auto",
        help="weights and compute of teacher and student: auto (bfloat16 on CUDA, float32 on CPU; the "
        "default), bfloat16, float16 or float32; recurrent states and normalisers accumulate in fp32 "
        "and trained parameters are held in fp32 whatever it is",
    )


def add_convert_args(p, main_job=False):
    from linearize.convert.settings import ConvertSettings
    from linearize.convert.targets import MIXERS
    from linearize.flags import add_flags

    target = f"conversion target: {', '.join(MIXERS)}" + (f" (default {DEFAULT_TARGET})" if main_job else "")
    add_flags(p, ConvertSettings, required=("base",) if main_job else ("base", "target"), help={"target": target})
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")


def build_parser():
    parser = argparse.ArgumentParser(prog="linearize", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb")
    conv = sub.add_parser("convert", help="convert a base model into a (hybrid) linear-attention model")
    add_convert_args(conv)
    add_dtype_arg(conv)
    conv.add_argument("--out", required=True, help="output directory for the checkpoint")

    ev = sub.add_parser("eval", help="perplexity, teacher agreement, recall and lm-eval tasks")
    ev.add_argument("model", help="converted checkpoint folder, or any --base value")
    ev.add_argument("--teacher", default=None, help="base to compare with (evaluated too, listed first)")
    ev.add_argument("--suite", default="ppl,agreement", help="comma list of ppl, agreement, recall, lm-eval")
    ev.add_argument(
        "--data",
        default=None,
        help="evaluation text: file, folder, corpus:NAME (an out-of-domain "
        "corpus: gnu-manuals, c-code, jargon) or hub dataset (default: "
        "the offline default corpus)",
    )
    ev.add_argument(
        "--split",
        default="heldout",
        help="heldout (the held-out split of --data, never trained on; "
        "default) or all (every document: for corpora never trained on)",
    )
    ev.add_argument(
        "--max-tokens", type=int, default=8192, help="tokens for ppl and agreement (whole windows, at least one)"
    )
    ev.add_argument(
        "--seq-len",
        type=int,
        default=512,
        help="window length, up to the model's max_position_embeddings (default 512)",
    )
    ev.add_argument(
        "--by-position",
        action="store_true",
        help="add perplexity per position bucket (and positions.png, the loss against position)",
    )
    ev.add_argument(
        "--buckets",
        default=None,
        help="position bucket edges for --by-position (default 0,64,256,1024,4096; implies --by-position)",
    )
    ev.add_argument("--tasks", default="", help="lm-eval task names, comma separated")
    ev.add_argument("--include-path", default=None, help="folder of extra lm-eval task YAMLs")
    ev.add_argument("--limit", type=int, default=None, help="lm-eval: examples per task")
    ev.add_argument(
        "--passkey-lengths",
        default="",
        help="recall: the older passkey in one repeated filler sentence at these lengths (default: off)",
    )
    ev.add_argument(
        "--recall-lengths", default="1024,2048,4096", help="recall: prompt lengths in tokens (8192,16384 on a GPU)"
    )
    ev.add_argument(
        "--recall-tasks",
        default="passkey,niah_single,niah_multikey,niah_multivalue",
        help="recall: tasks, comma separated",
    )
    ev.add_argument("--recall-depths", type=int, default=3, help="recall: equal needle-depth buckets")
    ev.add_argument(
        "--recall-prompts",
        type=int,
        default=20,
        help="recall: seeded prompts per task, length and depth bucket (20: one prompt is 5%% of a score)",
    )
    ev.add_argument(
        "--haystack",
        default="corpus:gnu-manuals,corpus:jargon",
        help="recall: the ordinary text needles hide in, comma separated data specs",
    )
    ev.add_argument(
        "--recall-read-twice",
        action="store_true",
        help="recall: Just-Read-Twice prompting, each prompt's text given twice before its question (about twice "
        "--recall-lengths tokens)",
    )
    ev.add_argument(
        "--sparse-cache",
        type=int,
        default=None,
        help="evaluate the model with LoLA's sparse cache of N keys per key/value head in its LoLCATs-style layers "
        "(training-free; see `linearize convert --sparse-cache`)",
    )
    from linearize.convert.settings import ConvertSettings

    ev.add_argument(
        "--sparse-select",
        choices=ConvertSettings.__dataclass_fields__["sparse_select"].metadata["choices"],  # convert's, one list
        default=None,
        help="with --sparse-cache: the keys it keeps (default: mean; see `linearize convert --sparse-select`)",
    )
    ev.add_argument("--out", default="eval-results", help="folder for eval.json and eval.md")
    add_dtype_arg(ev)

    be = sub.add_parser("bench", help="prefill and decode speed, cache and peak memory vs context length")
    be.add_argument("model", help="converted checkpoint folder, or any --base value")
    be.add_argument("--teacher", default=None, help="base measured in the same run (listed first)")
    be.add_argument("--contexts", default="512,2048,8192,16384")
    be.add_argument("--decode-tokens", type=int, default=32)
    be.add_argument("--repeats", type=int, default=5)
    be.add_argument(
        "--batch",
        default=None,
        help="serving throughput too: generated tokens/s of N sequences decoding together at each context "
        "(each a copy of that context's prefilled cache), or 'max': the largest batch that fits there, "
        "doubling from 1 until one runs out of memory (or passes --max-batch)",
    )
    be.add_argument("--max-batch", type=int, default=4096, help="with --batch max: stop doubling here")
    be.add_argument("--out", default="bench-results", help="folder for bench.json, bench.md and bench.png")
    add_dtype_arg(be)

    dis = sub.add_parser("distill", help="train a converted model: attention transfer or end-to-end KD")
    dis.add_argument("model", help="converted checkpoint folder")
    add_train_args(dis)
    add_dtype_arg(dis)
    dis.add_argument("--teacher", default=None, help="teacher base (default: the base the model was converted from)")
    dis.add_argument("--out", required=True, help="output folder for the distilled checkpoint")
    dis.add_argument("--overwrite", action="store_true")

    push = sub.add_parser("push", help="verify a checkpoint, write its model card and upload it to the Hub")
    push.add_argument("folder", help="converted checkpoint folder")
    push.add_argument("--repo-id", required=True, help="USER/NAME on the Hub")
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    push.add_argument("--dry-run", action="store_true", help="verify and list what would be uploaded; upload nothing")
    push.add_argument(
        "--native",
        action="store_true",
        help="publish as the architecture transformers ships (see `linearize export`): no remote code",
    )

    cor = sub.add_parser("corpora", help="list or fetch the out-of-domain corpora (built from Debian packages)")
    cor.add_argument("action", choices=["list", "fetch"])
    cor.add_argument("names", nargs="*", help="corpora to fetch (default: all)")
    cor.add_argument("--force", action="store_true", help="fetch again even if present")
    cor.add_argument("--count-tokens", action="store_true", help="also count SmolLM2 tokens per corpus")

    rep = sub.add_parser("report", help="one comparison table from several eval/bench JSON results")
    rep.add_argument("results", nargs="+", help="JSON files written by eval or bench")
    rep.add_argument("--out", default=None, help="write the markdown here (default: print it)")

    exp = sub.add_parser(
        "export",
        help="write a checkpoint as an architecture transformers ships (no remote code): "
        "mamba -> GraniteMoeHybrid, gdn on Qwen3 -> Qwen3-Next",
    )
    exp.add_argument("folder", help="converted checkpoint folder (target mamba; llama, mistral or qwen2 base)")
    exp.add_argument("--out", required=True, help="output directory for the GraniteMoeHybrid checkpoint")
    exp.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return parser


# The training flags the main job takes (the rest are the distill verb's).
MAIN_JOB_TRAINING = (
    "tokens",
    "seq_len",
    "batch_size",
    "grad_accum",
    "save_every",
    "save_minutes",
    "deepspeed",
    "transfer_mode",
    "seed",
)


def add_train_args(p, main_job=False):
    from linearize.distill.config import TrainConfig
    from linearize.distill.recipe import CPU, GPU
    from linearize.flags import add_flags

    p.add_argument(
        "--data",
        default=None,
        help="training text: .txt/.jsonl/.json/.parquet file or folder, or a hub "
        "dataset id[:config] (default: the offline corpus of Python's docs)",
    )
    # Fields the stage recipes set take their default from the stage and the machine, not from TrainConfig.
    per_stage = {k for recipe in (CPU, GPU) for stage in recipe.values() for k in stage}
    texts = {
        f.name: f.metadata["help"] + " (default: the stage's, on CUDA or CPU: distill/recipe.py)"
        for f in dataclasses.fields(TrainConfig)
        if f.name in per_stage
    }
    if main_job:
        texts["tokens"] = "training tokens for both stages together (55% transfer, 45% kd)"
    add_flags(
        p,
        TrainConfig,
        only=MAIN_JOB_TRAINING if main_job else None,
        required=() if main_job else ("stage",),
        help=texts,
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in the same --out "
        + (
            "(stages that finished are not rerun: their saved students load; the unfinished one continues "
            "from its newest complete checkpoint)"
            if main_job
            else "from its newest complete checkpoint"
        )
        + "; it says what it resumed from, or that there is nothing to resume and it starts fresh",
    )


def _ints(text, flag):
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated whole numbers, got {text!r}") from None


def parse_batch(text):
    """--batch: None, a whole number >= 1, or 'max'."""
    if text is None or str(text).strip() == "max":
        return None if text is None else "max"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"--batch takes a whole number >= 1 or 'max', got {text!r}")
    return n


def parse_buckets(text):
    """Position bucket edges from '0,64,256': increasing non-negative whole numbers."""
    try:
        edges = [int(x) for x in str(text).split(",")]
    except ValueError:
        edges = []
    if not edges or any(e < 0 for e in edges) or any(a >= b for a, b in zip(edges, edges[1:])):
        raise UserError(
            f"--buckets takes increasing non-negative whole numbers separated by commas "
            f"(for example 0,64,256,1024,4096), got {text!r}"
        )
    return tuple(edges)


def _recall_args(args, suite):
    """evaluate()'s recall settings from the --recall-* and --haystack flags."""
    from linearize.evals.recall import RECALL_TASKS

    tasks = [t.strip() for t in args.recall_tasks.split(",") if t.strip()]
    if set(tasks) - set(RECALL_TASKS):
        raise UserError(f"unknown --recall-tasks {args.recall_tasks!r}: choose from {', '.join(RECALL_TASKS)}")
    lengths = _ints(args.recall_lengths, "--recall-lengths")
    if any(n < 64 for n in lengths):
        raise UserError(f"--recall-lengths takes lengths of at least 64 tokens, got {args.recall_lengths!r}")
    if args.recall_depths < 1 or args.recall_prompts < 1:
        raise UserError(
            f"--recall-depths and --recall-prompts take whole numbers >= 1, "
            f"got {args.recall_depths} and {args.recall_prompts}"
        )
    haystack = [h.strip() for h in args.haystack.split(",") if h.strip()]
    if "recall" in suite and tasks and lengths and not haystack:
        raise UserError("--haystack needs at least one data spec (for example corpus:gnu-manuals)")
    return dict(
        recall_tasks=tasks,
        recall_lengths=lengths,
        recall_depths=args.recall_depths,
        recall_prompts=args.recall_prompts,
        haystack=haystack,
        read_twice=args.recall_read_twice,
    )


def run_eval(args):
    from linearize.convert.bases import resolve_dtype
    from linearize.convert.load import load_model, max_positions
    from linearize.evals import report
    from linearize.evals.perplexity import DEFAULT_BUCKETS, SPLITS, heldout_ids
    from linearize.evals.suite import SUITES, add_ratios, evaluate

    dtype = resolve_dtype(args.dtype)
    suite = [s.strip() for s in args.suite.split(",") if s.strip()]
    if set(suite) - set(SUITES):
        raise UserError(f"unknown --suite {args.suite!r}: choose from {', '.join(SUITES)}")
    lengths = _ints(args.passkey_lengths, "--passkey-lengths")
    recall = _recall_args(args, suite)
    tasks = [t for t in args.tasks.split(",") if t]
    if "lm-eval" in suite and not tasks:
        raise UserError("--suite lm-eval needs --tasks (for example --tasks arc_easy,piqa)")
    by_position = args.by_position or args.buckets is not None
    buckets = parse_buckets(args.buckets) if args.buckets is not None else DEFAULT_BUCKETS
    if args.split not in SPLITS:
        raise UserError(f"unknown --split {args.split!r}: choose from {', '.join(SPLITS)}")
    if args.seq_len < 2 or args.max_tokens < 1:
        raise UserError(
            f"--seq-len must be at least 2 and --max-tokens at least 1, got {args.seq_len} and {args.max_tokens}"
        )
    for spec in [s for s in (args.teacher, args.model) if s]:  # from the configs, before any weights load
        limit = max_positions(spec)
        if limit is not None and args.seq_len > limit and ("ppl" in suite or "agreement" in suite):
            raise UserError(
                f"--seq-len {args.seq_len} is longer than {spec!r} takes "
                f"(max_position_embeddings {limit}); use at most {limit}"
            )
        reads = 2 if recall["read_twice"] else 1  # read twice, a prompt is about twice its length
        if limit is not None and "recall" in suite and reads * max(recall["recall_lengths"] or [0]) > limit:
            twice = " with --recall-read-twice (prompts of twice the length)" if reads == 2 else ""
            raise UserError(
                f"--recall-lengths {args.recall_lengths} reaches past what {spec!r} takes{twice} "
                f"(max_position_embeddings {limit}); use at most {limit // reads}"
            )
    if "recall" in suite and recall["recall_tasks"] and recall["recall_lengths"]:  # a haystack that cannot be had
        from linearize.evals.recall import haystack_documents  # fails before any weights load

        haystack_documents(recall["haystack"])
    teacher = load_model(args.teacher, dtype=dtype) if args.teacher else None
    student = load_model(args.model, dtype=dtype)
    from linearize.convert.load import converted_config

    converted = converted_config(args.model) is not None
    if args.sparse_select and args.sparse_cache is None:
        raise UserError("--sparse-select chooses the keys of a sparse cache: give --sparse-cache N too")
    if args.sparse_cache is not None:
        from linearize.convert.convert import set_sparse_cache

        if not converted:
            raise UserError(f"--sparse-cache applies to a converted checkpoint; {args.model!r} is not one")
        set_sparse_cache(student[0], args.sparse_cache, args.sparse_select)
        by = f" ({args.sparse_select})" if args.sparse_select else ""
        student = (*student[:2], f"{student[2]} +sparse-cache {args.sparse_cache}{by}")
    ids = None
    if "ppl" in suite or "agreement" in suite:  # the same windows for teacher and student
        ids = heldout_ids(student[1], args.data, seq_len=args.seq_len, max_tokens=args.max_tokens, split=args.split)
    kwargs = dict(
        suite=suite,
        data=args.data,
        seq_len=args.seq_len,
        max_tokens=args.max_tokens,
        tasks=tasks,
        include_path=args.include_path,
        limit=args.limit,
        passkey_lengths=lengths,
        buckets=buckets if by_position else None,
        split=args.split,
        ids=ids,
        **recall,
    )
    results = []
    if teacher is not None:
        results.append(evaluate(*teacher, **{**kwargs, "suite": [s for s in suite if s != "agreement"]}))
        results[-1]["role"] = "teacher"
    results.append(evaluate(*student, teacher=teacher[0] if teacher else None, **kwargs))
    if teacher is not None or converted:  # a base model alone is just a model
        results[-1]["role"] = "student"
    if teacher is not None:
        add_ratios(results[-1], results[0])
    for r, (model, _, _) in zip(results, [m for m in (teacher, student) if m is not None]):
        r["text"] = {"data": str(args.data or "default"), "split": args.split, "seq_len": args.seq_len}
        r["dtype"] = _dtype_name(model.dtype)
    curves = {r["name"]: r["quality"]["position_nll"] for r in results if "position_nll" in r["quality"]}
    if len(curves) < len(results) and curves:  # a teacher and student of the same name
        curves = {f"{r.get('role') or 'student'}: {r['name']}": r["quality"]["position_nll"] for r in results}
    paths = report.write(results, args.out, "eval")
    print(report.comparison(results))
    if "recall" in suite:
        from linearize.evals.recall_plot import recall_table, write_recall

        print(recall_table(results))
        print(f"recall grids: {', '.join(map(str, write_recall(results, args.out)))}")
    if curves:
        title = f"Loss by position: {args.data or 'default corpus'} ({args.split}), {args.seq_len}-token windows"
        plot = report.plot_positions(curves, Path(args.out) / "positions.png", title=title)
        print(f"results: {paths[0]}, {paths[1]} and {plot}")
    else:
        print(f"results: {paths[0]} and {paths[1]}")


def run_bench(args):
    from linearize.convert.bases import resolve_dtype
    from linearize.convert.load import load_model
    from linearize.evals import report
    from linearize.evals.bench import bench, plot

    dtype = resolve_dtype(args.dtype)
    contexts = _ints(args.contexts, "--contexts")
    batch = parse_batch(args.batch)
    if args.max_batch < 1:
        raise UserError(f"--max-batch takes a whole number >= 1, got {args.max_batch}")
    results = []
    for spec in [s for s in (args.teacher, args.model) if s]:
        model, _, name = load_model(spec, dtype=dtype)
        print(f"benchmarking {name} at {contexts} in {_dtype_name(dtype)}", file=sys.stderr, flush=True)
        results.append(
            {
                "name": name,
                "speed": bench(
                    model, contexts, args.decode_tokens, args.repeats, batch=batch, max_batch=args.max_batch
                ),
                "device": str(model.device),
                "dtype": _dtype_name(model.dtype),
            }
        )
        del model
    paths = report.write(results, args.out, "bench")
    plot({r["name"]: r["speed"] for r in results}, Path(args.out) / "bench.png")
    print(report.comparison(results))
    print(f"results: {paths[0]}, {paths[1]} and {Path(args.out) / 'bench.png'}")


def check_deepspeed(path):
    """A --deepspeed config that cannot be used is refused before any model loads."""
    if path is not None:
        from linearize.distill.deepspeed_config import check_deepspeed_config

        try:
            check_deepspeed_config(path)
        except ValueError as err:
            raise UserError(str(err)) from None


def run_distill(args):
    from linearize.api import distill
    from linearize.convert.bases import resolve_dtype
    from linearize.convert.load import load_model
    from linearize.distill.config import TrainConfig
    from linearize.distill.recipe import stage_config
    from linearize.flags import given

    dtype = resolve_dtype(args.dtype)
    out = check_out(args.out, args.overwrite or args.resume)
    check_deepspeed(args.deepspeed)
    overrides = {k: v for k, v in given(args, TrainConfig).items() if k != "stage"}
    stage_config(args.stage, **overrides)  # degenerate settings fail before any model loads
    student, tokenizer, _ = load_model(args.model, dtype=dtype)
    teacher_spec = args.teacher or student.config.linearize.get("base")
    if not teacher_spec:
        raise UserError("the checkpoint does not record its base; pass --teacher")
    from linearize.convert.bases import load_base

    teacher = load_base(teacher_spec, dtype=dtype)
    summary = distill(
        student, teacher, tokenizer, out, stage=args.stage, data=args.data, resume=args.resume, **overrides
    )
    print(
        f"{args.stage}: {summary['steps']} steps, {summary['tokens']:,} tokens, {summary['tokens_per_s']:.0f} tok/s, "
        f"loss {summary['first_loss']:.4g} -> {summary['last_loss']:.4g}; saved to {out}"
    )


def run_push(args):
    from linearize.hub import push_to_hub

    if not Path(args.folder).is_dir():
        raise UserError(f"no such checkpoint folder: {args.folder!r}")
    push_to_hub(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        dry_run=args.dry_run,
        native=args.native,
    )


def run_export(args):
    import json

    from linearize.convert.export_native import HOST_NAMES, export_native

    if not Path(args.folder).is_dir():
        raise UserError(f"no such checkpoint folder: {args.folder!r}")
    out = export_native(args.folder, check_out(args.out, args.overwrite))
    host = HOST_NAMES[json.loads((Path(out) / "config.json").read_text())["model_type"]]
    print(f"exported {args.folder} as {host} to {out}")


def run_corpora(args):
    import json

    from linearize.data import corpora

    if args.action == "list":
        for name, spec in corpora.CORPORA.items():
            print(f"{name}: {spec['what']} (Debian: {', '.join(f'{p} {v}' for p, v in spec['versions'].items())})")
        return
    unknown = [n for n in args.names if n not in corpora.CORPORA]
    if unknown:
        raise UserError(f"unknown corpus {unknown[0]!r}: choose from {', '.join(corpora.CORPORA)}")
    tokenizer = None
    if args.count_tokens:
        from linearize.convert.bases import load_tokenizer

        tokenizer = load_tokenizer("llama")
    for name in args.names or list(corpora.CORPORA):
        path = corpora.fetch(name, force=args.force)
        info = json.loads((path / "SOURCE").read_text())
        line = (
            f"{name}: {info['documents']} documents, {info['characters']:,} characters from "
            f"{', '.join(f'{p} {v}' for p, v in info['packages'].items())} -> {path}"
        )
        if tokenizer is not None:
            texts = [p.read_text(encoding="utf-8") for p in sorted(path.glob("*.txt"))]
            tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
            line += f" ({tokens:,} SmolLM2 tokens)"
        print(line, flush=True)


def run_report(args):
    from linearize.evals import report

    missing = [p for p in args.results if not Path(p).is_file()]
    if missing:
        raise UserError(f"no such result file: {missing[0]!r}")
    text = report.comparison(report.load(args.results))
    if args.out:
        Path(args.out).write_text(text)
    print(text)


def build_main_parser():
    from linearize.pipeline import OOD_CORPORA, RECALL
    from linearize.recipes import RECIPES

    parser = argparse.ArgumentParser(
        prog="linearize",
        description="The main job: convert BASE, attention transfer, end-to-end KD, quality of teacher and student "
        "(out-of-domain perplexity by length and position, passkey, MQAR), save. With the default target "
        "the recipe is lolcats --decay 64 --sinks 4 --rank-by kl-multikey --keep-attention auto:N, N = 12/30 of the "
        "layers (each can be overridden; --keep-attention none converts every layer). "
        "Verbs: convert, distill, eval, bench, report, push, export, corpora (linearize VERB -h).",
    )
    add_convert_args(parser, main_job=True)
    add_train_args(parser, main_job=True)
    add_dtype_arg(parser)
    parser.add_argument("--out", default=None, help="output directory (default: ./linearized-<base>-<target>)")
    parser.add_argument(
        "--recipe",
        default=None,
        help=f"a published method's settings ({', '.join(RECIPES)}; linearize/recipes.py): its target, layer, plan "
        "and training, for what the other flags leave unset (default: lolcats, for the lolcats target)",
    )
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="push the result to this Hub repo")
    parser.add_argument(
        "--export",
        choices=["none", "native"],
        default="none",
        help="native: also write OUT-native, the result as an architecture transformers ships "
        "(see `linearize export`; refused before training if the target/base has none), "
        "and push that folder with --push-to-hub",
    )
    parser.add_argument(
        "--eval-data",
        default=",".join(OOD_CORPORA),
        help="out-of-domain corpora measured after training, comma separated data specs, or 'none'",
    )
    parser.add_argument(
        "--eval-lengths",
        default="",
        help="window lengths for them (default: the training length and 8x it, at least 2048)",
    )
    parser.add_argument("--eval-tokens", type=int, default=8192, help="tokens per corpus and window length")
    parser.add_argument("--passkey-lengths", default=",".join(map(str, RECALL["passkey_lengths"])))
    parser.add_argument("--mqar-pairs", default=",".join(map(str, RECALL["mqar_pairs"])))
    return parser


def run_main_job(args):
    from linearize.convert.bases import load_config, resolve_dtype
    from linearize.convert.convert import check_target
    from linearize.convert.plan import parse_keep_attention
    from linearize.convert.settings import ConvertSettings
    from linearize.flags import given
    from linearize.pipeline import main_job, summary_lines
    from linearize.recipes import RECIPES, as_flags, get_recipe

    recipe_name = args.recipe
    if recipe_name is not None:
        recipe = get_recipe(recipe_name)
        if args.target is not None and args.target != recipe.target:
            raise SettingError(f"--recipe {recipe_name} converts to {recipe.target}: drop --to {args.target}")
        args.target = recipe.target
    args.target = args.target or DEFAULT_TARGET
    if recipe_name is None and args.target == DEFAULT_TARGET:
        recipe_name = "lolcats"  # the main job's own recipe (pipeline.MAIN_RECIPE)
    if args.out is None:
        args.out = f"linearized-{Path(str(args.base)).name}-{args.target}"
    dtype = resolve_dtype(args.dtype)
    out = check_out(args.out, args.overwrite or args.resume)
    check_deepspeed(args.deepspeed)
    if args.export == "native":
        check_out(f"{out}-native", args.overwrite or args.resume)
    check_target(args.target)
    _, config = load_config(args.base)
    settings = ConvertSettings(**given(args, ConvertSettings)).mixer_settings()
    recipe, stage_overrides = None, None
    if recipe_name is not None:  # the preset fills what the command line left unset
        recipe = RECIPES[recipe_name].record(recipe_name, config.num_hidden_layers, settings, args.keep_attention)
        args.keep_attention, settings = recipe["keep_attention"], recipe["convert_settings"]
        stage_overrides = recipe["stage_overrides"]
        print(f"recipe {recipe_name} ({recipe['about']}): {as_flags(recipe)}", file=sys.stderr, flush=True)
    parse_keep_attention(args.keep_attention, config.num_hidden_layers)
    corpora = [] if args.eval_data.strip() == "none" else [c.strip() for c in args.eval_data.split(",") if c.strip()]
    t0 = time.time()
    result = main_job(
        args.base,
        args.target,
        out,
        keep_attention=args.keep_attention,
        stage_overrides=stage_overrides,
        recipe=recipe,
        data=args.data,
        resume=args.resume,
        dtype=dtype,
        **{k: getattr(args, k) for k in MAIN_JOB_TRAINING},
        log=lambda m: print(m, file=sys.stderr, flush=True),
        convert_settings=settings,
        eval_corpora=corpora,
        eval_lengths=_ints(args.eval_lengths, "--eval-lengths") or None,
        eval_tokens=args.eval_tokens,
        passkey_lengths=_ints(args.passkey_lengths, "--passkey-lengths"),
        mqar_pairs=_ints(args.mqar_pairs, "--mqar-pairs"),
        export=None if args.export == "none" else args.export,
    )
    native = result.get("native")
    print(f"linearized {args.base} -> {args.target} ({_dtype_name(dtype)}) in {time.time() - t0:.0f}s")
    for stage, s in result["stages"].items():
        print(
            f"  {stage}: {s['tokens']:,} tokens, {s['seconds']:.0f}s, {s['tokens_per_s']:.0f} tok/s, "
            f"loss {s['first_loss']:.4g} -> {s['last_loss']:.4g}"
        )
    for line in summary_lines(result["quality"]):
        print(f"  {line}")
    print(f"  saved to {result['out']} (training logs, loss curves and checkpoints in {result['out']}/training)")
    if native:
        print(f"  exported natively to {native} (loads with plain transformers, no remote code)")
    if args.push_to_hub:
        from linearize.hub import push_to_hub

        push_to_hub(native or result["out"], args.push_to_hub, native=native is not None)


VERBS = {
    "convert": "run_convert_verb",
    "eval": "run_eval",
    "bench": "run_bench",
    "report": "run_report",
    "distill": "run_distill",
    "push": "run_push",
    "corpora": "run_corpora",
    "export": "run_export",
}


def run_convert_verb(args):
    from linearize.convert.settings import ConvertSettings
    from linearize.flags import given

    print_summary(
        run_convert(
            ConvertSettings(**given(args, ConvertSettings)), args.out, overwrite=args.overwrite, dtype=args.dtype
        )
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and not argv[0].startswith("-"):
        args = build_parser().parse_args(argv)
        run = globals()[VERBS[args.verb]]
    else:
        args = build_main_parser().parse_args(argv)
        run = run_main_job  # it resolves --recipe, --to and --out
    try:
        run(args)
    except LinearizeError as err:
        print(f"linearize: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
