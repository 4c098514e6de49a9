"""The command line: ``linearize VERB ...``, and ``linearize --base BASE`` for the main job.

User errors print one line, ``linearize: error: ...``, exit with code 2 and leave nothing behind:
the output is written to a temporary folder beside --out and renamed into place at the end.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_TARGET = "lolcats"  # the main job's target until distillation picks its own recipe


class UserError(Exception):
    pass


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


def run_convert(base, target, out, keep_attention=None, overwrite=False, feature_dim=None, window=None,
                recency_window=None, recency_threshold=None, recency_fraction=None):
    """Convert ``base`` and write the checkpoint (with tokenizer) to ``out``; returns a summary dict."""
    from linearize.convert.bases import load_base, load_config, load_tokenizer
    from linearize.convert.convert import check_target, convert, new_parameter_count
    from linearize.convert.plan import parse_keep_attention

    out = check_out(out, overwrite)
    check_target(target)
    t0 = time.time()
    _stage(1, 4, f"resolving base {base!r}")
    _, config = load_config(base)
    parse_keep_attention(keep_attention, config.num_hidden_layers)  # fail before loading any weights
    _stage(2, 4, f"loading {config.model_type} base ({config.num_hidden_layers} layers)")
    model = load_base(base)
    tokenizer = load_tokenizer(base)
    _stage(3, 4, f"converting to {target}")
    settings = {k: v for k, v in {"feature_dim": feature_dim, "window": window, "recency_window": recency_window,
                                  "recency_threshold": recency_threshold, "recency_fraction": recency_fraction,
                                  }.items() if v is not None}
    student = convert(model, target, keep_attention=keep_attention, base_name=str(base), tokenizer=tokenizer, **settings)
    _stage(4, 4, f"saving to {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        student.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        else:
            print("note: the base has no tokenizer; the checkpoint is saved without one", file=sys.stderr)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    state, kv = student.cache_bytes(4096)
    return {
        "out": str(out),
        "target": target,
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
    if evidence:
        import torch

        from linearize.convert.calibration import recency_table

        print(f"attention recency (share of mass on the last {evidence['window']} tokens; "
              f"{evidence['samples'][0]} calibration samples of {evidence['samples'][1]} tokens"
              + (f"; * = at or above {evidence['threshold']}, becomes a Mamba head" if "threshold" in evidence else "")
              + "):")
        print(recency_table(torch.tensor(evidence["recency"]), evidence.get("threshold")))
    if s["target"] == "recurformer":
        heads = sum(len(m["mamba_heads"]) for m in s["mixers"] if m)
        total = s["layers"] * len(evidence["recency"][0])
        print(f"mamba heads: {heads}/{total}; KV-cache reduction at 4k tokens: "
              f"{1 - s['state_bytes_4k'] / s['kv_bytes_4k']:.1%} (state and remaining KV vs the base's KV)")
    print(f"converted {s['layers_converted']}/{s['layers']} layers to {s['target']}"
          + (f" (softmax attention kept in {s['kept_attention']})" if s["kept_attention"] else ""))
    print(f"parameters added: {s['parameters_added']:,}")
    ratio = s["kv_bytes_4k"] / max(s["state_bytes_4k"], 1)
    print(f"decode state per sequence at 4k tokens: {_fmt_bytes(s['state_bytes_4k'])} "
          f"vs {_fmt_bytes(s['kv_bytes_4k'])} KV cache ({ratio:.1f}x smaller)")
    print(f"saved to {s['out']} in {s['seconds']:.1f}s")


def add_convert_args(p, target_default=None):
    from linearize.convert.targets import MIXERS

    p.add_argument("--base", required=True, help="hub id, local HF directory, or alias (llama = embedded SmolLM2-135M-Instruct)")
    p.add_argument("--to", dest="target", default=target_default, required=target_default is None,
                   help=f"conversion target: {', '.join(MIXERS)}")
    p.add_argument("--keep-attention", default=None,
                   help="layers that keep softmax attention: '0,5,-1', 'every:K', a fraction '0.25', or 'auto:N' (calibrated)")
    p.add_argument("--feature-dim", type=int, default=None, help="feature-map size (default: per target)")
    p.add_argument("--window", type=int, default=None, help="sliding-window size for lolcats (default 64)")
    p.add_argument("--recency-window", type=int, default=None,
                   help="recurformer / auto:N: tokens counted as recent when measuring heads (default 64)")
    p.add_argument("--recency-threshold", type=float, default=None,
                   help="recurformer: heads at or above this recency become Mamba heads (default 0.9)")
    p.add_argument("--recency-fraction", type=float, default=None,
                   help="recurformer: convert this share of all heads, most local first (instead of a threshold)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")


def build_parser():
    parser = argparse.ArgumentParser(prog="linearize", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb")
    conv = sub.add_parser("convert", help="convert a base model into a (hybrid) linear-attention model")
    add_convert_args(conv)
    conv.add_argument("--out", required=True, help="output directory for the checkpoint")
    return parser


def build_main_parser():
    parser = argparse.ArgumentParser(
        prog="linearize",
        description="The main job: convert BASE (distillation follows in later stages). Verbs: convert.",
    )
    add_convert_args(parser, target_default=DEFAULT_TARGET)
    parser.add_argument("--out", default=None, help="output directory (default: ./linearized-<base>-<target>)")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    from linearize.convert.bases import BaseError
    from linearize.convert.convert import UnknownTargetError
    from linearize.convert.families import UnsupportedFamilyError
    from linearize.convert.plan import PlanError

    if argv and not argv[0].startswith("-"):
        args = build_parser().parse_args(argv)
    else:
        args = build_main_parser().parse_args(argv)
        if args.out is None:
            args.out = f"linearized-{Path(str(args.base)).name}-{args.target}"
    try:
        summary = run_convert(args.base, args.target, args.out, keep_attention=args.keep_attention,
                              overwrite=args.overwrite, feature_dim=args.feature_dim, window=args.window,
                              recency_window=args.recency_window, recency_threshold=args.recency_threshold,
                              recency_fraction=args.recency_fraction)
    except (UserError, BaseError, UnknownTargetError, UnsupportedFamilyError, PlanError) as err:
        print(f"linearize: error: {err}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
