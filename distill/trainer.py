"""The trainer: one loop for both stages, with gradient accumulation, an LR schedule, clipping, teacher outputs
computed on the fly, atomic checkpoints and exact resume, a progress bar, TensorBoard logs and a loss-curve PNG.

Its parts: ``config`` (TrainConfig), ``objectives`` (what a stage minimises, built by ``build_objective``),
``precision`` (trained parameters held in fp32), ``runners`` (accelerate for one process or DDP, the DeepSpeed
engine for ZeRO-2/3, behind one interface), ``checkpoints``; this module holds the loop (``train``).
"""

import os
import sys
import time
from pathlib import Path

import torch

from linearize.distill.checkpoints import (
    changed_settings,
    checkpoint_interval,
    latest_checkpoint,
    load_checkpoint,
    plot_losses,
    save_checkpoint,
)
from linearize.distill.config import TrainConfig
from linearize.distill.objectives import build_objective
from linearize.distill.runners import AccelerateRun, DeepSpeedRun, Runner
from linearize.distill.stages import merge


def lr_schedule(optimizer, cfg, steps):
    """Linear warm-up over ``cfg.warmup_steps``, then a cosine to ``cfg.lr * cfg.min_lr_ratio`` at ``steps``."""
    from transformers import get_cosine_schedule_with_warmup

    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, steps)
    if cfg.min_lr_ratio:
        floor, base_lambda = cfg.min_lr_ratio, scheduler.lr_lambdas[0]
        scheduler.lr_lambdas[0] = lambda s: floor + (1 - floor) * base_lambda(s)
    return scheduler


def train(student, teacher, blocks, cfg: TrainConfig, out, resume=False, progress=True, log=None):
    """Run one stage on ``blocks`` [N, seq_len]; returns (trained student with LoRA merged, summary, history).
    With ``resume`` it continues from the newest complete checkpoint under ``out`` and logs which (path, step,
    tokens seen), or logs that there is none and starts fresh. ``log`` takes those lines (default: stderr)."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    out = Path(out)
    cuda = torch.cuda.is_available()
    set_seed(cfg.seed)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = cfg.batch_size * cfg.grad_accum * world  # sequences per optimizer step
    steps = max(1, min(cfg.tokens // (per_step * cfg.seq_len), len(blocks) // per_step))
    blocks = blocks[: steps * per_step, : cfg.seq_len]
    objective, fp32 = build_objective(student, teacher, cfg)
    dtype = fp32.dtype
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = lr_schedule(optimizer, cfg, steps)
    dataset = torch.utils.data.TensorDataset(blocks, torch.arange(len(blocks)))  # with indices: who saw what
    runner = DeepSpeedRun if cfg.deepspeed else AccelerateRun
    run: Runner = runner(objective, optimizer, scheduler, dataset, cfg, cuda, out, dtype)
    if log is None:

        def log(line):
            print(line, file=sys.stderr, flush=True)

    say = log if run.is_main_process else (lambda line: None)

    step, history = 0, []
    tokens_per_step = per_step * cfg.seq_len
    if resume and (ckpt := latest_checkpoint(out)) is not None:
        state = load_checkpoint(run, ckpt)
        step, history = state["step"], state["history"]
        say(
            f"{cfg.stage}: resuming from {ckpt} at step {step} of {steps} "
            f"({step * tokens_per_step:,} of {steps * tokens_per_step:,} tokens seen)"
        )
        changed = changed_settings(state.get("config", {}), cfg)
        if changed:
            say(
                f"{cfg.stage}: warning: settings differ from the checkpoint's (then -> now): "
                + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
            )
    elif resume:
        say(f"{cfg.stage}: nothing to resume (no complete checkpoint in {out / 'checkpoints'}); starting fresh")
    every = checkpoint_interval(cfg, steps)
    last_save = time.time()
    bar = tqdm(total=steps, initial=step, desc=cfg.stage, disable=not (progress and run.is_local_main_process))
    t0, tokens_done, running, seen = time.time(), 0, 0.0, []
    objective.train()
    for ids, index in run.batches(step * cfg.grad_accum):
        if step >= steps:
            break
        seen.append(index)
        loss, per_layer, boundary = run.step(ids)
        running += loss.detach().float().item() / cfg.grad_accum
        tokens_done += ids.numel() * run.num_processes
        if not boundary:
            continue
        step += 1
        loss_value, running = run.mean(running), 0.0
        lr = run.lr()
        record = {"step": step, "loss": loss_value, "lr": lr}
        if per_layer:
            record["layers"] = {str(i): round(v.item(), 6) for i, v in per_layer.items()}
        history.append(record)
        run.log({"loss": loss_value, "lr": lr, **{f"layer_{i}": v for i, v in record.get("layers", {}).items()}}, step)
        bar.set_postfix(loss=f"{loss_value:.4g}", tok_s=f"{tokens_done / max(time.time() - t0, 1e-9):.0f}")
        bar.update(1)
        due = bool(every) and step % every == 0
        if cfg.save_minutes and not due:
            due = time.time() - last_save >= 60 * cfg.save_minutes
            if run.num_processes > 1:  # every process must agree: the write has barriers
                due = run.mean(float(due)) > 0
        if due and step < steps:
            save_checkpoint(run, out, step, history, extra={"config": cfg.to_dict()})
            last_save = time.time()
    bar.close()
    elapsed = time.time() - t0
    seen = run.gather(torch.cat(seen)).cpu().tolist() if seen else []
    run.end()
    trained = fp32.restore(merge(run.trained()))
    if run.is_main_process and history:
        plot_losses(history, out / f"loss_curve_{cfg.stage}.png")
    summary = {
        "stage": cfg.stage,
        "steps": step,
        "tokens": steps * per_step * cfg.seq_len,
        "seconds": elapsed,
        "tokens_per_s": tokens_done / max(elapsed, 1e-9),
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
        "config": cfg.to_dict(),
        "samples_seen": seen,
        "processes": run.num_processes,
        "distributed": run.distributed_type,
        "dtype": str(dtype).removeprefix("torch."),
    }
    return trained, summary, history
