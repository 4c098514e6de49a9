"""Prefill tokens/s, teacher against the main job's student shape, in one run (issue #23's CPU point).

The teacher is the embedded SmolLM2-135M-Instruct (SDPA); the student is it converted as the main job's default
recipe converts it: LoLCATs layers (window 64, 4 sinks, decay 64) with softmax kept in the layers the main job's KL
ranking on retrieval probes keeps (12 of 30: 4, 5, 7, 8, 15, 17, 18, 20, 21, 22, 23, 26;
benchmarks/smollm2/main-job-cpu.txt's run). Speed does not depend on the trained values, so
the student is undistilled. Each length is prefilled as ``linearize bench`` does (2048-token pieces through the
model's cache); the rounds alternate the models' order, and the table keeps each model's median and the median of
the per-round ratios.

    python benchmarks/prefill_vs_teacher.py --lengths 2048 8192 16384 --rounds 3 \
        --out benchmarks/smollm2/prefill-vs-teacher.md
"""

import argparse
import json
import platform
import statistics
import sys

import torch

from linearize.api import convert, load_base
from linearize.evals.bench import prefill

DEFAULT_KEPT = [4, 5, 7, 8, 15, 17, 18, 20, 21, 22, 23, 26]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="llama")
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 16384])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None, help="markdown file for the table (also printed)")
    args = ap.parse_args()
    torch.manual_seed(0)
    teacher = load_base(args.base, dtype="float32").eval()
    student = convert(teacher, "lolcats", keep_attention=DEFAULT_KEPT, window=64, sinks=4, decay=64).eval()
    models = {"teacher": teacher, "student": student}
    prefill(teacher, 256)  # one-off warm-up of both
    prefill(student, 256)
    seconds = {(name, n): [] for name in models for n in args.lengths}
    for r in range(args.rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for n in args.lengths:
            for name in order:
                _, _, row = prefill(models[name], n)
                seconds[name, n].append(n / row["prefill_tokens_per_s"])
                print(f"round {r} {name} {n}: {row['prefill_tokens_per_s']:.0f} tok/s", file=sys.stderr, flush=True)
    lines = [
        f"`{' '.join(['python', *sys.argv])}` on {platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, float32, batch 1, {args.rounds} rounds",
        "",
        "| tokens | teacher tok/s | student tok/s | student / teacher (median of rounds) |",
        "|---|---|---|---|",
    ]
    rows = []
    for n in args.lengths:
        t, s = statistics.median(seconds["teacher", n]), statistics.median(seconds["student", n])
        ratio = statistics.median(a / b for a, b in zip(seconds["teacher", n], seconds["student", n]))
        rows.append(
            {
                "tokens": n,
                "teacher_tok_s": n / t,
                "student_tok_s": n / s,
                "speedup": ratio,
                "teacher_s": seconds["teacher", n],
                "student_s": seconds["student", n],
            }
        )
        lines.append(f"| {n} | {n / t:.0f} | {n / s:.0f} | {ratio:.2f}x |")
    text = "\n".join(lines) + "\n\n```json\n" + json.dumps(rows, indent=1) + "\n```\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
