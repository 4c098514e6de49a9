"""Host memory per rank of DeepSpeed ZeRO-2 and ZeRO-3 training, 2 ranks under torchrun on CPU (gloo).

Each rank builds the same random Llama-shaped base (from a config; no download; seed 0), converts it to
LoLCATs (the teacher stays as loaded, the student is its conversion, both float32 as on CPU) and runs a
few optimizer steps of one stage through ``linearize.distill.trainer.train`` with
``distill/configs/zero2.json`` or ``zero3.json``. Per rank it reports:

- loaded: RSS once teacher and student exist, before training (the same for every row);
- at step 1: RSS when the first training step starts (models sharded or not, optimizer state made);
- training peak: the highest RSS from the first training step to the end of the last (the kernel's VmHWM,
  reset at the first step through /proc/self/clear_refs), so it excludes set-up and the end-of-stage
  consolidation of the trained weights;
- tensor bytes: the bytes of every tensor storage alive (gc) at the first step: models, shards, optimizer
  state; independent of the allocator;
- process peak: the process's ru_maxrss at the end (everything, set-up and consolidation included).

The ranks run with glibc's MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ at 128 KiB, so every tensor
above that is its own mapping, returned to the kernel when freed: RSS follows the live tensors rather than
what the allocator keeps in its pools (without it, the whole weights ZeRO-3 frees when it shards stay
resident as free heap and hide the saving). ``--trainer FILE`` measures another distill/trainer.py in place
of the installed one (e.g. ``git show f30abf1:distill/trainer.py > /tmp/old_trainer.py``: the trainer before
the ZeRO-3 rework), with everything else as installed.

    python benchmarks/zero3_memory.py [--stages transfer kd] [--zero 2 3] [--steps 3] [--transfer-mode MODE]
                                      [--trainer FILE] [--md FILE] [--label TEXT]
"""

import argparse
import gc
import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Llama-shaped, about 156M parameters (623 MB in float32): big enough that a whole copy shows against a shard.
SHAPE = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 8,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def rss_kib(field):
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def live_tensor_bytes():
    """Bytes of all tensor storages reachable by Python's gc, each storage once."""
    seen = {}
    for obj in gc.get_objects():
        if isinstance(obj, __import__("torch").Tensor) and not obj.is_meta:
            storage = obj.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def random_base(seed=0):
    """The base of ``SHAPE`` with transformers' random init, the same on every rank (same seed)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(SHAPE)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(
        AutoConfig.for_model(fields.pop("model_type"), **fields), dtype=torch.float32
    ).eval()


def worker(args):
    """One rank (run by torchrun): build, convert, train a few steps, write this rank's numbers."""
    import dataclasses

    import torch

    from linearize.convert.convert import convert

    if args.trainer:  # another trainer.py in place of the installed one
        spec = importlib.util.spec_from_file_location("linearize.distill.trainer", args.trainer)
        module = importlib.util.module_from_spec(spec)
        sys.modules["linearize.distill.trainer"] = module
        spec.loader.exec_module(module)
        import linearize.distill

        linearize.distill.trainer = module
    from linearize.distill import trainer  # noqa: F811
    from linearize.distill.trainer import TrainConfig, train  # noqa: F811

    rank = int(os.environ.get("RANK", "0"))
    teacher = random_base()
    student = convert(teacher, "lolcats", keep_attention="none", window=64)
    gc.collect()
    stats = {"rank": rank, "loaded_rss": rss_kib("VmRSS") * 1024}
    step = trainer.DeepSpeedRun.step

    def measured_step(self, ids):
        if "tensor_bytes" not in stats:
            gc.collect()
            stats["tensor_bytes"] = live_tensor_bytes()
            stats["step1_rss"] = rss_kib("VmRSS") * 1024
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on
        out = step(self, ids)
        stats["training_peak"] = rss_kib("VmHWM") * 1024
        return out

    trainer.DeepSpeedRun.step = measured_step
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    extra = {"transfer_mode": args.transfer_mode} if args.transfer_mode and "transfer_mode" in fields else {}
    cfg = TrainConfig(
        stage=args.stage,
        tokens=args.steps * 2 * args.seq_len,
        seq_len=args.seq_len,
        batch_size=1,
        lr=1e-3,
        deepspeed=str(ROOT / "distill" / "configs" / f"zero{args.zero}.json"),
        train="lora",
        save_every=0,
        save_minutes=0,
        **extra,
    )
    blocks = torch.randint(
        3, SHAPE["vocab_size"], (4 * args.steps, args.seq_len), generator=torch.Generator().manual_seed(0)
    )
    with tempfile.TemporaryDirectory() as out:
        trained, summary, _ = train(student, teacher, blocks, cfg, out, progress=False)
    stats["steps"] = summary["steps"]
    stats["process_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stats["trained_on_every_rank"] = sum(p.numel() for p in trained.parameters())
    Path(args.result).with_suffix(f".rank{rank}.json").write_text(json.dumps(stats))


def launch(stage, zero, steps, seq_len, transfer_mode, port, trainer=None):
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            __file__,
            "--worker",
            "--stage",
            stage,
            "--zero",
            str(zero),
            "--steps",
            str(steps),
            "--seq-len",
            str(seq_len),
            "--result",
            str(result),
            *(["--transfer-mode", transfer_mode] if transfer_mode else []),
            *(["--trainer", trainer] if trainer else []),
        ]
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
        return [json.loads(result.with_suffix(f".rank{r}.json").read_text()) for r in range(2)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stages", nargs="+", default=["transfer", "kd"], choices=["transfer", "kd"])
    p.add_argument("--zero", nargs="+", type=int, default=[2, 3], choices=[2, 3])
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per run (batch 1 per rank)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument(
        "--transfer-mode", default=None, help="the transfer stage's --transfer-mode (where the trainer has one)"
    )
    p.add_argument("--trainer", help="measure this distill/trainer.py instead of the installed one")
    p.add_argument("--md", help="append the table to this markdown file")
    p.add_argument("--label", default="", help="a note for the table's heading (e.g. the commit measured)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.zero = args.zero[0]
        return worker(args)
    gib = 2**30
    lines = [
        f"### {args.label or 'measurement'}",
        "",
        f"random Llama shape (hidden 1024, 8 layers, vocab 32000; 156M parameters, float32), all layers "
        f"LoLCATs; 2 ranks, batch 1 x {args.seq_len} tokens per rank, {args.steps} steps",
        "",
        "| stage | ZeRO | rank | loaded | at step 1 | training peak | tensor bytes at step 1 | process peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    port = 29700
    for stage in args.stages:
        for zero in args.zero:
            port += 1
            for s in launch(stage, zero, args.steps, args.seq_len, args.transfer_mode, port, args.trainer):
                row = (
                    f"| {stage} | {zero} | {s['rank']} | {s['loaded_rss'] / gib:.2f} GiB | "
                    f"{s['step1_rss'] / gib:.2f} GiB | {s['training_peak'] / gib:.2f} GiB | "
                    f"{s['tensor_bytes'] / gib:.2f} GiB | "
                    f"{s['process_peak'] / gib:.2f} GiB |"
                )
                print(row, flush=True)
                lines.append(row)
    report(lines, args.md)


def report(lines, md=None):
    """Print the table and append it to ``md`` (the benchmark's committed record)."""
    table = "\n".join(lines) + "\n"
    print(table)
    if md:
        with open(md, "a") as f:
            f.write("\n" + table)


if __name__ == "__main__":
    main()
