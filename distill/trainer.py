"""The trainer: one loop for both stages on accelerate (DDP, DeepSpeed ZeRO-2/3 through its plugin),
with gradient accumulation and checkpointing, an LR schedule, clipping, teacher outputs computed on
the fly, atomic checkpoints every N steps and exact resume, a progress bar, TensorBoard logs and a
loss-curve PNG.

Checkpoints are written to ``checkpoints/.tmp-step-N`` and renamed to ``checkpoints/step-N`` only
once complete (``state.json`` is written last), so a run killed mid-write never leaves a checkpoint
that resume would load.
"""

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from linearize.distill.stages import kd_loss, merge, select_trainable, transfer_loss


@dataclasses.dataclass
class TrainConfig:
    stage: str = "transfer"  # transfer | kd
    tokens: int = 50_000  # training tokens (global), rounded down to whole optimizer steps
    seq_len: int = 512
    batch_size: int = 2  # sequences per micro-batch per process
    grad_accum: int = 1
    lr: float = 1e-2
    weight_decay: float = 0.0
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = 0  # optimizer steps between checkpoints (0: only at the end)
    temperature: float = 1.0  # kd
    top_k: int | None = None  # kd: KL over the teacher's top-k tokens
    ce_weight: float = 0.0  # kd: weight of next-token cross-entropy
    train: str = "lora"  # kd: lora | new | lora+new | attention | mlp | all
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple = ("q_proj", "k_proj", "v_proj", "o_proj")
    gradient_checkpointing: bool = False
    mixed_precision: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    deepspeed: str | None = None  # a DeepSpeed JSON config (distill/configs/zero2.json, zero3.json)

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


class TransferObjective(nn.Module):
    """The student as the trained module; the teacher is held outside the module tree so DDP and ZeRO
    neither wrap nor shard it."""

    def __init__(self, student, teacher):
        super().__init__()
        self.student = student
        self._teacher = (teacher,)

    def forward(self, input_ids):
        return transfer_loss(self.student, self._teacher[0], input_ids)


class KDObjective(nn.Module):
    def __init__(self, student, teacher, cfg):
        super().__init__()
        self.student = student
        self._teacher = (teacher,)
        self.cfg = cfg

    def forward(self, input_ids):
        with torch.no_grad():
            teacher_logits = self._teacher[0](input_ids).logits
        logits = self.student(input_ids=input_ids).logits
        loss = kd_loss(logits, teacher_logits, self.cfg.temperature, self.cfg.top_k, self.cfg.ce_weight, input_ids)
        return loss, {}


def latest_checkpoint(out):
    """The newest complete checkpoint folder under ``out/checkpoints`` (with state.json), or None."""
    root = Path(out) / "checkpoints"
    done = [p for p in root.glob("step-*") if (p / "state.json").exists()] if root.exists() else []
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def save_checkpoint(accelerator, scheduler, out, step, history):
    root = Path(out) / "checkpoints"
    final, tmp = root / f"step-{step}", root / f".tmp-step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        torch.save(scheduler.state_dict(), tmp / "scheduler_lr.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "history": history}))  # written last
        os.replace(tmp, final)
    accelerator.wait_for_everyone()


def plot_losses(history, path):
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


def train(student, teacher, blocks, cfg, out, resume=False, progress=True):
    """Run one stage on ``blocks`` [N, seq_len]; returns (trained student with LoRA merged, summary)."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, set_seed
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    out = Path(out)
    cuda = torch.cuda.is_available()
    precision = ("bf16" if cuda else "no") if cfg.mixed_precision == "auto" else cfg.mixed_precision
    plugin = DeepSpeedPlugin(hf_ds_config=cfg.deepspeed) if cfg.deepspeed else None
    acc = Accelerator(cpu=not cuda, gradient_accumulation_steps=cfg.grad_accum, mixed_precision=precision, log_with="tensorboard",
                      project_dir=str(out), deepspeed_plugin=plugin)
    set_seed(cfg.seed)
    per_step = cfg.batch_size * cfg.grad_accum * acc.num_processes  # sequences per optimizer step
    steps = max(1, min(cfg.tokens // (per_step * cfg.seq_len), len(blocks) // per_step))
    blocks = blocks[: steps * per_step, : cfg.seq_len]
    model = select_trainable(student, cfg.stage, cfg.train, cfg.lora_r, cfg.lora_alpha, cfg.lora_targets)
    if cfg.gradient_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    objective = TransferObjective(model, teacher) if cfg.stage == "transfer" else KDObjective(model, teacher, cfg)
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, steps)
    if cfg.min_lr_ratio:
        floor = cfg.min_lr_ratio
        base_lambda = scheduler.lr_lambdas[0]
        scheduler.lr_lambdas[0] = lambda s: floor + (1 - floor) * base_lambda(s)
    dataset = torch.utils.data.TensorDataset(blocks, torch.arange(len(blocks)))  # with indices: who saw what
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False)
    objective, optimizer, loader = acc.prepare(objective, optimizer, loader)
    teacher.to(acc.device).eval().requires_grad_(False)
    acc.init_trackers(cfg.stage, config={k: str(v) for k, v in cfg.to_dict().items()})

    step, history = 0, []
    if resume:
        ckpt = latest_checkpoint(out)
        if ckpt is not None:
            acc.load_state(str(ckpt))
            scheduler.load_state_dict(torch.load(ckpt / "scheduler_lr.pt"))
            state = json.loads((ckpt / "state.json").read_text())
            step, history = state["step"], state["history"]
    batches = acc.skip_first_batches(loader, step * cfg.grad_accum) if step else loader
    bar = tqdm(total=steps, initial=step, desc=cfg.stage, disable=not (progress and acc.is_local_main_process))
    t0, tokens_done, micro, running, seen = time.time(), 0, 0, 0.0, []
    objective.train()
    for ids, index in batches:
        if step >= steps:
            break
        seen.append(index)
        with acc.accumulate(objective):
            loss, per_layer = objective(ids)
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        running += loss.detach().float().item() / cfg.grad_accum
        tokens_done += ids.numel() * acc.num_processes
        micro += 1
        if acc.sync_gradients:
            scheduler.step()
            step += 1
            loss_value = acc.reduce(torch.tensor(running, device=acc.device), "mean").item()
            running = 0.0
            record = {"step": step, "loss": loss_value, "lr": scheduler.get_last_lr()[0]}
            if per_layer:
                record["layers"] = {str(i): round(v.item(), 6) for i, v in per_layer.items()}
            history.append(record)
            acc.log({"loss": loss_value, "lr": record["lr"], **{f"layer_{i}": v for i, v in record.get("layers", {}).items()}},
                    step=step)
            rate = tokens_done / max(time.time() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.4g}", tok_s=f"{rate:.0f}")
            bar.update(1)
            if cfg.save_every and step % cfg.save_every == 0 and step < steps:
                save_checkpoint(acc, scheduler, out, step, history)
    bar.close()
    elapsed = time.time() - t0
    seen = acc.gather(torch.cat(seen).to(acc.device)).cpu().tolist() if seen else []
    acc.end_training()
    trained = merge(acc.unwrap_model(objective).student)
    if acc.is_main_process and history:
        plot_losses(history, out / f"loss_curve_{cfg.stage}.png")
    summary = {"stage": cfg.stage, "steps": step, "tokens": steps * per_step * cfg.seq_len,
               "seconds": elapsed, "tokens_per_s": tokens_done / max(elapsed, 1e-9),
               "first_loss": history[0]["loss"] if history else None, "last_loss": history[-1]["loss"] if history else None,
               "config": cfg.to_dict(), "samples_seen": seen, "processes": acc.num_processes,
               "distributed": str(acc.distributed_type).split(".")[-1],
               "zero_stage": acc.state.deepspeed_plugin.zero_stage if acc.state.deepspeed_plugin else None}
    return trained, summary, history
