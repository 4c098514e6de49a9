"""Decode ms/token of the teacher and converted students at given context lengths, measured in one process with
the models' rounds interleaved (teacher, student, teacher, ...), so a busy spell of a shared machine hits all of
them alike. The teacher's KV cache is cropped back to the context after each round, so every round measures it at
the stated length (a growing cache would slow it and flatter the students). Students are undistilled conversions:
decode speed does not depend on training. Ratios: the median over rounds of student / teacher in the same round
(paired: a slow spell of the shared machine moves both), and the ratio of the two medians. The models' order rotates
from round to round.

    python benchmarks/decode_vs_teacher.py --contexts 512,16384 --out benchmarks/smollm2/decode-vs-teacher.md
"""

import argparse
import statistics
import sys
import time

import torch

from linearize.api import convert
from linearize.convert.bases import load_base
from linearize.evals.bench import decode, prefill

STUDENTS = {  # name: conversion settings
    "all-lolcats": {"target": "lolcats"},
    "main-recipe-shape": {"target": "lolcats", "decay": 64, "sinks": 4, "keep_attention": "0.25"},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="llama")
    ap.add_argument("--contexts", default="512,16384")
    ap.add_argument("--tokens", type=int, default=16, help="decode steps per round")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--control",
        action="store_true",
        help="also measure a second, identical all-lolcats student: how far apart two copies of one "
        "model come out is the run's noise floor",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher = load_base(args.base, dtype="float32").eval()
    models = {"teacher": teacher}
    students = {**STUDENTS, "all-lolcats-copy": STUDENTS["all-lolcats"]} if args.control else STUDENTS
    for name, settings in students.items():
        settings = dict(settings)
        models[name] = convert(teacher, settings.pop("target"), **settings).eval()
    lines = [
        f"decode ms/token, {args.base}, float32, torch threads {torch.get_num_threads()}, {args.rounds} "
        f"interleaved rounds of {args.tokens} steps: median (min) ms; paired ratio = median over rounds of "
        "student / teacher in the same round; ratio of medians in brackets",
        "",
        "| context | " + " | ".join(models) + " |",
        "|---" * (len(models) + 1) + "|",
    ]
    for context in (int(c) for c in args.contexts.split(",")):
        runs = {}
        for name, model in models.items():
            cache, token, _ = prefill(model, context)
            _, token = decode(model, cache, token, 2)  # warm-up
            runs[name] = [model, cache, token, []]
        names = list(runs)
        for r in range(args.rounds):
            # Each round starts one model later: in a fixed order the model right after the teacher ran slower than
            # an identical copy of it measured after it (--control shows the two copies side by side).
            for name in names[r % len(names) :] + names[: r % len(names)]:
                run = runs[name]
                seconds, run[2] = decode(run[0], run[1], run[2], args.tokens)
                run[3].append(1000 * seconds)
                if name == "teacher":
                    run[1].crop(
                        context + 2 - run[1].get_seq_length()
                    )  # back to the stated context (negative: tokens to drop)
        med = {name: statistics.median(run[3]) for name, run in runs.items()}
        paired = {n: statistics.median(s / t for s, t in zip(runs[n][3], runs["teacher"][3])) for n in models}
        cells = [
            f"{med[n]:.1f} ({min(runs[n][3]):.1f}), {paired[n]:.2f}x ({med[n] / med['teacher']:.2f}x)" for n in models
        ]
        lines.append(f"| {context} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
        del runs
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"`python {' '.join(sys.argv)}`, {time.strftime('%Y-%m-%d')}\n\n" + text)


if __name__ == "__main__":
    main()
