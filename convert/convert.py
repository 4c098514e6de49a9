"""Conversion: swap the planned attention modules of a base model for mixers built from their weights."""

import torch

from linearize.convert.configuration_linearized import LinearizedConfig
from linearize.convert.families import check_family
from linearize.convert.targets import MIXERS
from linearize.convert.auto import LinearizedForCausalLM  # registers the Auto classes too
from linearize.convert.calibration import (DEFAULT_THRESHOLD, DEFAULT_WINDOW, calibration_ids, fresh_mixer,
                                           head_recency, layer_kl, rank_by_kl)
from linearize.convert.plan import PlanError, auto_count, parse_keep_attention


RANKINGS = ("recency", "kl")
KL_SAMPLES = (4, 512)  # calibration windows for rank_by="kl": long enough to need more than the window


class UnknownTargetError(ValueError):
    pass


def check_target(target):
    if target not in MIXERS:
        raise UnknownTargetError(f"unknown target {target!r}: choose one of {', '.join(MIXERS)}")


def versions():
    import importlib.metadata

    import transformers

    return {"linearize": importlib.metadata.version("linearize"), "transformers": transformers.__version__, "torch": torch.__version__}


def convert(base, target, keep_attention=None, base_name=None, tokenizer=None, calibration=None,
            recency_window=DEFAULT_WINDOW, recency_threshold=DEFAULT_THRESHOLD, recency_fraction=None,
            rank_by="recency", **mixer_settings):
    """Return a ``LinearizedForCausalLM`` made from ``base`` (a loaded HF causal LM).

    target: one of ``MIXERS``; keep_attention: a plan spec (see ``convert.plan``); mixer_settings:
    per-mixer overrides such as ``feature_dim`` or ``window``. Every tensor of the base is reused by
    name; only the mixers' new parameters are freshly initialised.

    ``recurformer`` and ``auto:N`` plans measure head recency on calibration text: ``calibration``
    token ids [N, T], or the offline default texts through ``tokenizer``. RecurFormer converts the heads
    whose recency is at least ``recency_threshold``, or, with ``recency_fraction``, that share of all
    heads, most local first. The numbers are saved in ``config.linearize["plan_evidence"]``.

    ``rank_by="kl"`` ranks layers for ``auto:N`` by measured quality instead: the KL from the base of
    the base with only that layer converted (fresh mixer), on longer calibration windows (``layer_kl``).
    """
    check_target(target)
    check_family(base.config.model_type)
    for name, value in (("--recency-threshold", recency_threshold), ("--recency-fraction", recency_fraction)):
        if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise PlanError(f"bad {name} {value!r}: a number from 0 to 1")
    if not (isinstance(recency_window, int) and recency_window >= 1):
        raise PlanError(f"bad --recency-window {recency_window!r}: a whole number of tokens >= 1")
    if rank_by not in RANKINGS:
        raise PlanError(f"bad --rank-by {rank_by!r}: choose one of {', '.join(RANKINGS)}")
    num_layers = base.config.num_hidden_layers
    evidence, recency = None, None
    n_auto = auto_count(keep_attention, num_layers)
    if n_auto is not None and rank_by == "kl" and target != "recurformer":
        if calibration is None:
            if tokenizer is None:
                raise PlanError(f"keep_attention={keep_attention!r} ranked by KL needs calibration text: pass "
                                "tokenizer= (default texts) or calibration= (token ids)")
            calibration = calibration_ids(tokenizer, num_samples=KL_SAMPLES[0], seq_len=KL_SAMPLES[1])
        cls = MIXERS[target]
        kl = layer_kl(base, calibration, lambda attn, i: fresh_mixer(cls, attn, base.config, i, **mixer_settings))
        kept = rank_by_kl(kl, n_auto)
        evidence = {"method": "kl", "samples": list(calibration.shape), "kl": [round(x, 5) for x in kl.tolist()]}
    elif target == "recurformer" or n_auto is not None:
        if calibration is None:
            if tokenizer is None:
                raise PlanError(f"{target!r} with keep_attention={keep_attention!r} measures attention on calibration "
                                 "text: pass tokenizer= (default texts) or calibration= (token ids)")
            calibration = calibration_ids(tokenizer)
        recency = head_recency(base, calibration, recency_window)
        evidence = {"method": "attention recency", "window": recency_window, "samples": list(calibration.shape),
                    "recency": [[round(r, 4) for r in row] for row in recency.tolist()]}
    if evidence is None or evidence["method"] != "kl":
        kept = parse_keep_attention(keep_attention, num_layers, recency)
    if target == "recurformer":
        if recency_fraction is not None:
            # The threshold that selects that share of heads (ties may add a few).
            count = round(recency_fraction * recency.numel())
            recency_threshold = recency.flatten().sort(descending=True).values[count - 1].item() if count else 2.0
            evidence["fraction"] = recency_fraction
        evidence["threshold"] = round(recency_threshold, 4)
        mixers = []
        for i in range(num_layers):
            heads = [h for h, r in enumerate(recency[i].tolist()) if r >= recency_threshold]
            mixers.append(None if i in kept or not heads else {"target": target, "mamba_heads": heads})
    else:
        template = MIXERS[target](base.config, 0, **mixer_settings)
        mixers = [None if i in kept else template.settings() for i in range(num_layers)]
    if evidence is not None:
        evidence["kept_layers"] = kept
    config = LinearizedConfig(
        base_config=base.config.to_dict(),
        mixers=mixers,
        linearize={
            "base": base_name or getattr(base.config, "_name_or_path", None),
            "target": target,
            "keep_attention": kept,
            "keep_attention_spec": None if keep_attention is None else str(keep_attention),
            "versions": versions(),
            "history": [{"step": "convert", "target": target}],
            "plan_evidence": evidence,
        },
    )
    config._attn_implementation = base.config._attn_implementation
    model = LinearizedForCausalLM(config)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    new = {f"model.layers.{i}.self_attn.{n}" for i, m in model.mixers().items() for n in m.new_parameter_names()}
    if unexpected or set(missing) - new:
        raise RuntimeError(f"weights did not map onto the converted model: missing {sorted(set(missing) - new)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
    return model.to(base.dtype).eval()


def new_parameter_count(model):
    return sum(p.numel() for m in model.mixers().values() for n, p in m.named_parameters()
               if n in set(m.new_parameter_names()))
