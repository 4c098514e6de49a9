"""The training config: one stage's settings as a dataclass, each field with its help text (and its choices
where it has a fixed set) in ``dataclasses.field`` metadata, the schema the CLI's flags are made from.
Degenerate settings fail at construction with one line naming the flag."""

import dataclasses
import math

from linearize.distill.stages import TRAINABLE, TRANSFER_MODES
from linearize.errors import SettingError

STAGES = ("transfer", "kd")
MIXED_PRECISION = ("no", "auto", "bf16", "fp16")


def _field(default, text, choices=None):
    """A field whose metadata holds its help text (and choices): keywords of ``argparse.add_argument``, as
    transformers' ``HfArgumentParser`` reads them."""
    return dataclasses.field(
        default=default, metadata={"help": text} if choices is None else {"help": text, "choices": choices}
    )


@dataclasses.dataclass
class TrainConfig:
    stage: str = _field(
        "transfer",
        "the stage: transfer (each mixer learns its softmax attention's output) or kd "
        "(the whole student learns the teacher's next-token distribution)",
        STAGES,
    )
    transfer_mode: str = _field(
        "streamed",
        "attention transfer: streamed (the teacher walked a layer at a time, one mixer's activations "
        "alive at once; the default on CUDA) or whole (the teacher's whole forward, every mixer's graph kept until "
        "backward; the default on CPU, where it is faster); the same losses and gradients",
        TRANSFER_MODES,
    )
    tokens: int = _field(50_000, "training tokens (all processes together), rounded down to whole optimizer steps")
    seq_len: int = _field(512, "tokens per training sequence")
    batch_size: int = _field(2, "sequences per micro-batch per process")
    grad_accum: int = _field(1, "micro-batches whose gradients add up to one optimizer step")
    lr: float = _field(1e-2, "peak learning rate (AdamW), reached after the warm-up, then decayed on a cosine")
    weight_decay: float = _field(0.0, "AdamW's weight decay")
    warmup_steps: int = _field(0, "optimizer steps of linear warm-up from 0 to --lr")
    min_lr_ratio: float = _field(0.1, "the cosine decays the learning rate to --lr times this (a fraction, 0 to 1)")
    max_grad_norm: float = _field(1.0, "gradients are clipped to this global norm before each optimizer step")
    seed: int = _field(0, "random seed: the order of the training blocks and every random draw of the run")
    save_every: int | None = _field(
        None,
        "optimizer steps between resumable checkpoints (default: a tenth of each stage's steps; 0: none by "
        "step count); only the newest is kept",
    )
    save_minutes: float = _field(
        30.0, "also checkpoint when this many minutes passed since the last checkpoint (0: none by time)"
    )
    temperature: float = _field(
        1.0, "kd: temperature of the teacher's and the student's softmax (the loss is scaled by its square)"
    )
    top_k: int | None = _field(None, "kd: the KL over the teacher's top-k tokens only (default: the whole vocabulary)")
    ce_weight: float = _field(0.0, "kd: weight of the next-token cross-entropy added to the KL (0: the KL alone)")
    retrieval_share: float = _field(
        0.0,
        "share of the training blocks (0 to 1) turned into retrieval exercises: facts placed at seeded depths of the "
        "block's text and asked for at its end, the teacher's answers the target (distill.data)",
    )
    kd_chunk: int = _field(1024, "kd: tokens whose logits are made at once (memory: kd-chunk x vocabulary)")
    train: str = _field(
        "lora",
        "kd: what trains: lora (adapters on --lora-targets), new (the parameters the "
        "conversion added), lora+new, or the student's own attention, mlp or all weights",
        TRAINABLE,
    )
    lora_r: int = _field(8, "kd: LoRA rank")
    lora_alpha: int = _field(16, "kd: LoRA alpha (the adapters' output is scaled by alpha / r)")
    lora_targets: tuple[str, ...] = _field(
        ("q_proj", "k_proj", "v_proj", "o_proj"), "kd: the modules LoRA adapts, by name"
    )
    gradient_checkpointing: bool = _field(
        False, "recompute the student's activations in backward instead of keeping them (less memory, more time)"
    )
    mixed_precision: str = _field(
        "no",
        "accelerate's autocast on top of the models' dtype (--dtype): no, bf16, "
        "fp16 (auto: no); not used under --deepspeed",
        MIXED_PRECISION,
    )
    deepspeed: str | None = _field(None, "DeepSpeed config JSON (distill/configs/zero2.json, zero3.json)")

    def __post_init__(self):
        """Degenerate settings fail here, at construction, with one line naming the flag: before any model
        loads or any earlier run's work is cleared."""
        for name, low in (
            ("tokens", 1),
            ("seq_len", 2),
            ("batch_size", 1),
            ("grad_accum", 1),
            ("warmup_steps", 0),
            ("kd_chunk", 1),
            ("lora_r", 1),
            ("save_every", 0),
            ("top_k", 1),
        ):
            value = getattr(self, name)
            if value is None and name in ("save_every", "top_k"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SettingError(f"bad --{name.replace('_', '-')} {value!r}: a whole number >= {low}")
        for name, low, above in (
            ("lr", 0, True),
            ("temperature", 0, True),
            ("max_grad_norm", 0, True),
            ("lora_alpha", 0, True),
            ("weight_decay", 0, False),
            ("ce_weight", 0, False),
            ("save_minutes", 0, False),
            ("min_lr_ratio", 0, False),
            ("retrieval_share", 0, False),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (value > low if above else value >= low)
                or not math.isfinite(value)
            ):
                raise SettingError(f"bad --{name.replace('_', '-')} {value!r}: a number {'>' if above else '>='} {low}")
        if self.min_lr_ratio > 1:
            raise SettingError(f"bad --min-lr-ratio {self.min_lr_ratio!r}: a fraction of --lr, at most 1")
        if self.retrieval_share > 1:
            raise SettingError(f"bad --retrieval-share {self.retrieval_share!r}: a share of the blocks, at most 1")
        for field in dataclasses.fields(self):
            choices = field.metadata.get("choices")
            if choices is not None and getattr(self, field.name) not in choices:
                what = "transfer mode" if field.name == "transfer_mode" else f"--{field.name.replace('_', '-')}"
                raise SettingError(f"unknown {what} {getattr(self, field.name)!r}: choose one of {', '.join(choices)}")

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
