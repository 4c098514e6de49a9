"""Checkpoints of a training run, and its loss curve.

Checkpoints are on by default: every tenth of the stage's optimizer steps (``save_every=None``) and at
least every 30 minutes (``save_minutes``), so a killed run loses at most that much work. Each is written
to ``checkpoints/.tmp-step-N`` and renamed to ``checkpoints/step-N`` only once complete (``state.json``
is written last), so a run killed mid-write never leaves a checkpoint that resume would load; once a
newer one is complete the older ones are deleted (resume needs only the newest). What a checkpoint holds
besides ``state.json`` (weights, optimizer, LR schedule, random states) is the runner's to write and read
(``runners.Runner.save`` and ``load``)."""

import json
import os
import shutil
from pathlib import Path

# Settings whose change makes a resumed run differ from the one that wrote the checkpoint.
RESUME_KEYS = (
    "stage",
    "tokens",
    "seq_len",
    "batch_size",
    "grad_accum",
    "lr",
    "weight_decay",
    "warmup_steps",
    "min_lr_ratio",
    "max_grad_norm",
    "seed",
    "temperature",
    "top_k",
    "ce_weight",
    "train",
    "lora_r",
    "lora_alpha",
    "lora_targets",
)


def latest_checkpoint(out):
    """The newest complete checkpoint folder under ``out/checkpoints`` (with state.json), or None."""
    root = Path(out) / "checkpoints"
    done = [p for p in root.glob("step-*") if (p / "state.json").exists()] if root.exists() else []
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def checkpoint_interval(cfg, steps):
    """Optimizer steps between checkpoints: ``cfg.save_every``, or a tenth of the stage's ``steps`` when None."""
    return max(1, steps // 10) if cfg.save_every is None else cfg.save_every


def save_checkpoint(run, out, step, history, extra=None):
    """Write ``checkpoints/step-<step>`` atomically, then delete the older complete checkpoints. ``state.json``
    holds the step, the loss history and ``extra``."""
    root = Path(out) / "checkpoints"
    final, tmp = root / f"step-{step}", root / f".tmp-step-{step}"
    if run.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    run.barrier()
    run.save(tmp)
    run.barrier()
    if run.is_main_process:
        state = {"step": step, "history": history, **(extra or {})}
        (tmp / "state.json").write_text(json.dumps(state))  # written last
        os.replace(tmp, final)
        for old in [*root.glob("step-*"), *root.glob(".tmp-step-*")]:  # older ones, and writes a kill cut short
            number = old.name.rsplit("-", 1)[1]
            if number.isdigit() and int(number) < step:
                shutil.rmtree(old, ignore_errors=True)
    run.barrier()


def load_checkpoint(run, path):
    """Load the checkpoint folder ``path`` into ``run``; returns its ``state.json`` (step, history, config)."""
    run.load(path)
    return json.loads((Path(path) / "state.json").read_text())


def changed_settings(saved, cfg):
    """{setting: (then, now)} for each of ``RESUME_KEYS`` whose value in ``cfg`` differs from ``saved`` (the
    config dict a checkpoint recorded)."""
    now = cfg.to_dict()
    return {k: (v, now.get(k)) for k, v in saved.items() if k in RESUME_KEYS and now.get(k) != v}


def plot_losses(history, path):
    """The loss curve of ``history`` (one record a step) as a PNG at ``path``, the loss on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
