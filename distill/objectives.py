"""What a stage minimises, as a module the runners wrap: the student is the trained module, the teacher is held
outside the module tree so DDP and the student's ZeRO engine neither wrap nor shard it (ZeRO-3 shards it in an
engine of its own, ``runners.DeepSpeedRun``). ``build_objective`` makes a stage's objective from a config; the
trainer and benchmarks/scale_rehearsal.py both call it."""

import torch
from torch import nn

from linearize.distill.precision import TrainedInFP32, compute_dtype
from linearize.distill.stages import causal_lm_parts, chunked_kd_loss, select_trainable, transfer_loss


class Objective(nn.Module):
    """The student as the trained module, the teacher beside it. ``forward(input_ids)`` returns (loss,
    {layer: loss} where the stage has per-layer losses, else empty)."""

    def __init__(self, student, teacher):
        super().__init__()
        self.student = student
        self._teacher = (teacher,)  # a tuple: not a submodule

    @property
    def teacher(self):
        return self._teacher[0]

    def hold_teacher(self, teacher):
        """Use ``teacher`` from now on (a runner's sharded copy, or the caller's model back)."""
        self._teacher = (teacher,)


class TransferObjective(Objective):
    """Attention transfer (``stages.transfer_loss``); ``mode``: streamed or whole. ``dtype``: the student's compute
    dtype, in which each mixer takes the teacher's layer inputs."""

    def __init__(self, student, teacher, dtype=None, mode="streamed"):
        super().__init__(student, teacher)
        self.dtype = dtype
        self.mode = mode

    def forward(self, input_ids):
        return transfer_loss(self.student, self.teacher, input_ids, dtype=self.dtype, mode=self.mode)


class KDObjective(Objective):
    """KD from final hidden states: the decoders run whole, the output heads chunk by chunk inside
    ``chunked_kd_loss``, so the full [batch, seq, vocab] logits never exist."""

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher)
        self.cfg = cfg

    def forward(self, input_ids):
        teacher_decoder, teacher_head = causal_lm_parts(self.teacher)
        decoder, head = causal_lm_parts(self.student)
        with torch.no_grad():
            teacher_hidden = teacher_decoder(input_ids=input_ids, use_cache=False).last_hidden_state
        hidden = decoder(input_ids=input_ids, use_cache=False).last_hidden_state
        cfg = self.cfg
        loss = chunked_kd_loss(
            hidden,
            teacher_hidden,
            head,
            teacher_head,
            cfg.temperature,
            cfg.top_k,
            cfg.ce_weight,
            input_ids,
            cfg.kd_chunk,
        )
        return loss, {}


def build_objective(student, teacher, cfg):
    """The objective of stage ``cfg.stage`` and the ``TrainedInFP32`` holding its trained parameters (its
    ``dtype`` is the student's compute dtype; ``restore`` hands the trained model back in it). Marks what the
    stage trains (LoRA wraps the student in peft), turns on gradient checkpointing where ``cfg`` asks, and
    freezes the teacher in eval mode."""
    dtype = compute_dtype(student)
    model = select_trainable(student, cfg.stage, cfg.train, cfg.lora_r, cfg.lora_alpha, cfg.lora_targets)
    fp32 = TrainedInFP32(model, dtype)
    if cfg.gradient_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    teacher.eval().requires_grad_(False)
    objective = (
        TransferObjective(model, teacher, dtype, cfg.transfer_mode)
        if cfg.stage == "transfer"
        else KDObjective(model, teacher, cfg)
    )
    return objective, fp32
