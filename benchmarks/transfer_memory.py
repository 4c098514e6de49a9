"""Memory of one attention-transfer step, whole vs streamed (``linearize distill --transfer-mode``).

A random Llama-shaped base (built from a config; no download; float32, as on CPU) is converted to LoLCATs on
every layer (or a hybrid with ``--keep-attention``), and a training step of the transfer stage (the loss, then
backward, as the trainer runs it) is measured, memory in a fresh process per mode (one warm-up step, then one
measured step on the same batch), time in one more process that alternates the two modes:

- step peak: the highest RSS during the step minus the RSS before it (the kernel's VmHWM, reset through
  /proc/self/clear_refs): what the step's activations cost on top of the models. The worker runs with
  glibc's MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ at 128 KiB, so every tensor above that is its own
  mapping, returned to the kernel when freed: RSS follows the live tensors instead of the allocator's pools;
- seconds: wall time of one step, the least over ``--rounds`` rounds that run whole then streamed (on a
  machine shared with other work the least is the one least disturbed);
- the loss and the largest gradient difference from the whole form (the two forms must agree).

    python benchmarks/transfer_memory.py [--layers 8] [--batch 2] [--seq-len 1024] [--rounds 3]
                                         [--keep-attention none] [--md FILE] [--label TEXT]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zero3_memory import SHAPE, report  # the same random Llama shape (156M parameters)
from zero3_memory import rss_kib as kib


def build(args):
    """(teacher, student, its trained parameters, a batch) of the measured shape, the same in every process."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from linearize.convert.convert import convert
    from linearize.distill.stages import select_trainable

    fields = {**SHAPE, "num_hidden_layers": args.layers}
    torch.manual_seed(0)
    teacher = (
        AutoModelForCausalLM.from_config(AutoConfig.for_model(fields.pop("model_type"), **fields), dtype=torch.float32)
        .eval()
        .requires_grad_(False)
    )
    student = convert(teacher, "lolcats", keep_attention=args.keep_attention, window=64, decay=64, sinks=4)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # off the identity init, so the losses and gradients are not trivially equal
        for mixer in student.mixers().values():
            for name, p in mixer.named_parameters():
                if name in mixer.new_parameter_names():
                    p.add_(torch.randn(p.shape, generator=g) * 0.1)
    select_trainable(student, "transfer")
    params = [p for p in student.parameters() if p.requires_grad]
    ids = torch.randint(3, SHAPE["vocab_size"], (args.batch, args.seq_len), generator=torch.Generator().manual_seed(0))
    return teacher, student, params, ids


def step(teacher, student, params, ids, mode):
    from linearize.distill.stages import transfer_loss

    for p in params:
        p.grad = None
    loss, _ = transfer_loss(student, teacher, ids, mode=mode)
    loss.backward()
    return loss


def worker(args):
    import torch

    models = build(args)
    if args.mode == "timing":
        seconds = {"whole": [], "streamed": []}
        for _ in range(args.rounds):
            for mode in seconds:
                t0 = time.perf_counter()
                step(*models, mode)
                seconds[mode].append(time.perf_counter() - t0)
        print(json.dumps({mode: min(v) for mode, v in seconds.items()}))
        return
    step(*models, args.mode)  # warm-up: lazy initialisation
    before = kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    loss = step(*models, args.mode)
    peak = kib("VmHWM") - before
    torch.save([p.grad for p in models[2]], args.grads)
    print(json.dumps({"mode": args.mode, "step_peak": peak * 1024, "loss": loss.item(), "rss_before": before * 1024}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3, help="timing: rounds of one whole and one streamed step")
    p.add_argument("--keep-attention", default="none", help="layers kept as softmax attention (default none)")
    p.add_argument("--md", help="append the table to this markdown file")
    p.add_argument("--label", default="", help="a note for the table's heading")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--grads", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    import torch

    def run(mode, grads=None, env=None):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--mode",
            mode,
            "--grads",
            str(grads),
            "--layers",
            str(args.layers),
            "--batch",
            str(args.batch),
            "--seq-len",
            str(args.seq_len),
            "--keep-attention",
            args.keep_attention,
            "--rounds",
            str(args.rounds),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("whole", "streamed"):
            grads = Path(tmp) / f"{mode}.pt"
            rows[mode] = run(mode, grads, {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"})
            rows[mode]["grads"] = torch.load(grads)
    for mode, seconds in run("timing").items():
        rows[mode]["seconds"] = seconds
    whole = rows["whole"]
    mib = 2**20
    lines = [
        f"### {args.label or 'measurement'}",
        "",
        f"random Llama shape (hidden 1024, {args.layers} layers, vocab 32000, float32), LoLCATs "
        f"(keep attention: {args.keep_attention}); one transfer step, batch {args.batch} x {args.seq_len} tokens; "
        f"seconds: the least of {args.rounds} rounds",
        "",
        "| mode | step peak (RSS above the models) | seconds per step | loss | max grad difference from whole |",
        "|---|---|---|---|---|",
    ]
    for mode, r in rows.items():
        diff = max(
            ((a - b).abs().max().item() for a, b in zip(r["grads"], whole["grads"]) if a is not None or b is not None),
            default=0.0,
        )  # None: a parameter without gradient (sequences within the window reach no feature map)
        lines.append(
            f"| {mode} | {r['step_peak'] / mib:,.0f} MiB | {r['seconds']:.1f} | {r['loss']:.6g} | {diff:.1e} |"
        )
    report(lines, args.md)


if __name__ == "__main__":
    main()
