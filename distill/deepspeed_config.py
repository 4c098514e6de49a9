"""DeepSpeed configs: the user's JSON checked before any model loads, its "auto" values filled from the
TrainConfig, and the config of the teacher's inference-only ZeRO-3 engine."""

import copy
import json
from pathlib import Path

import torch

GATHER_ON_SAVE = "stage3_gather_16bit_weights_on_model_save"


def check_deepspeed_config(path):
    """The DeepSpeed config at ``path`` as a dict; ValueError (one line) if it is missing, not a JSON object, or a
    ZeRO-3 config with stage3_gather_16bit_weights_on_model_save false: the trained student is consolidated from
    the shards at the end of each stage."""
    try:
        ds = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--deepspeed {path}: not a readable JSON config ({type(err).__name__}: {err})") from None
    if not isinstance(ds, dict):
        raise ValueError(f"--deepspeed {path}: not a JSON object")
    zero = ds.get("zero_optimization") or {}
    if zero.get("stage") == 3 and zero.get(GATHER_ON_SAVE, "auto") not in ("auto", True):
        raise ValueError(
            f"--deepspeed {path}: {GATHER_ON_SAVE} is {zero[GATHER_ON_SAVE]!r}; ZeRO-3 needs true (or "
            f"auto): the trained student is consolidated from the shards at the end of each stage"
        )
    return ds


def deepspeed_config(cfg, dtype):
    """The DeepSpeed JSON config with its "auto" values filled from the TrainConfig; bf16 (fp16) is
    enabled where the student computes in bf16 (fp16). ZeRO-3 consolidates the trained weights at the end
    of the stage, so its stage3_gather_16bit_weights_on_model_save is on (``check_deepspeed_config``)."""
    ds = check_deepspeed_config(cfg.deepspeed)
    auto = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.max_grad_norm,
    }
    for key, value in auto.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    for key in ("bf16", "fp16"):
        if isinstance(ds.get(key), dict) and ds[key].get("enabled") == "auto":
            ds[key]["enabled"] = dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[key]
    ds.pop("train_batch_size", None)
    zero = ds.setdefault("zero_optimization", {})
    if zero.get("stage") == 3:
        zero[GATHER_ON_SAVE] = True
    return ds


def teacher_deepspeed_config(config, dtype):
    """The config of the teacher's inference-only ZeRO-3 engine: the student's ZeRO-3 settings, no optimizer,
    scheduler or clipping (it trains nothing), bf16/fp16 as the teacher's ``dtype`` (so it is not cast)."""
    keep = (
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "zero_optimization",
        "steps_per_print",
        "wall_clock_breakdown",
    )
    ds = {k: copy.deepcopy(v) for k, v in config.items() if k in keep}
    ds["bf16"], ds["fp16"] = {"enabled": dtype == torch.bfloat16}, {"enabled": dtype == torch.float16}
    return ds
