"""Stage defaults and the distillation recipe the main job runs: convert -> transfer -> kd -> held-out
perplexity of teacher and student.

The GPU defaults follow the anchors' recipes (LoLCATs: attention transfer of feature maps and mixing
factors at lr 1e-2, then LoRA r=8 on q/k/v/o at lr 1e-4; tens of millions of tokens on an 8B model).
The CPU defaults are a budget that finishes on the embedded 135M model within 20 minutes on 2 cores.
Attention transfer is streamed on GPUs (memory is the limit there: one mixer's activations at a time, so a
base whose mixers' activations do not fit together still trains) and whole on CPU, where the same losses
and gradients come a little sooner: streaming replays each mixer's forward in backward, trading a little time
for much less activation memory (benchmarks/transfer_memory.md measures both).
"""

import torch

from linearize.distill.config import TrainConfig

GPU = {
    "transfer": dict(
        tokens=20_000_000, seq_len=1024, batch_size=8, grad_accum=1, lr=1e-2, warmup_steps=50, transfer_mode="streamed"
    ),
    "kd": dict(
        tokens=20_000_000,
        seq_len=1024,
        batch_size=8,
        grad_accum=1,
        lr=1e-4,
        warmup_steps=50,
        gradient_checkpointing=True,
    ),
}
CPU = {  # 120k tokens: the main job (KL ranking, training, quality measurement) within the CPU budget; more
    # tokens cost time for no better quality (benchmarks/smollm2/length.md: main-job-cpu.txt, main-job-cpu-160k.txt)
    "transfer": dict(tokens=66_000, seq_len=256, batch_size=4, grad_accum=1, lr=1e-2, transfer_mode="whole"),
    "kd": dict(tokens=54_000, seq_len=256, batch_size=4, grad_accum=1, lr=1e-3),
}


def stage_config(stage, **overrides):
    """TrainConfig for ``stage`` with this machine's defaults (GPU or CPU) and ``overrides`` on top."""
    defaults = (GPU if torch.cuda.is_available() else CPU)[stage]
    return TrainConfig(stage=stage, **{**defaults, **{k: v for k, v in overrides.items() if v is not None}})


def distill(
    student,
    teacher,
    tokenizer,
    out,
    stage="transfer",
    data=None,
    resume=False,
    heldout_fraction=0.05,
    save=True,
    log=None,
    **overrides,
):
    """Run one stage and (with ``save``) write the distilled checkpoint to ``out`` atomically.

    Training state (checkpoints, TensorBoard logs, the loss curve) lives in ``<out>.work/<stage>``
    while the run goes on, so ``resume=True`` finds it after an interruption and continues from its
    newest checkpoint (written by default every tenth of the stage and at least every 30 minutes; see
    ``TrainConfig.save_every`` and ``save_minutes``), logging where from, or that there is none; on
    success it moves into ``out/training/<stage>``. Returns the stage summary (also appended to the
    checkpoint's history). ``log`` takes the resume lines (default: stderr).
    """
    import json
    from pathlib import Path

    from linearize.convert.save import save_atomic
    from linearize.distill.data import build_blocks, with_retrieval_exercises
    from linearize.distill.trainer import train

    cfg = stage_config(stage, **overrides)
    blocks, _ = build_blocks(data, tokenizer, cfg.seq_len, heldout_fraction, cfg.seed)
    blocks, exercises = with_retrieval_exercises(blocks, tokenizer, cfg.retrieval_share, cfg.seed)
    work = Path(f"{out}.work") / stage
    if not resume and work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    trained, summary, history = train(student, teacher, blocks, cfg, work, resume=resume, log=log)
    summary["data"] = str(data or "default")
    if exercises:
        summary["retrieval_exercises"] = exercises
    (work / "history.json").write_text(json.dumps(history))
    entry = {k: summary[k] for k in ("stage", "steps", "tokens", "seconds", "first_loss", "last_loss", "data", "dtype")}
    entry["lr"], entry["train"] = cfg.lr, cfg.train if stage == "kd" else "new parameters"
    trained.config.linearize = {
        **trained.config.linearize,
        "history": [*trained.config.linearize.get("history", []), entry],
    }
    if save:
        save_atomic(trained, tokenizer, out, extra={f"training/{stage}": work})
        leftover = Path(f"{out}.work")
        if leftover.exists() and not any(leftover.iterdir()):
            leftover.rmdir()
    summary["model"] = trained
    return summary
