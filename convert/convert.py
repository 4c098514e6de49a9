"""Conversion: swap the planned attention modules of a base model for mixers built from their weights."""

import torch

from linearize.convert.configuration_linearized import LinearizedConfig
from linearize.convert.families import check_family
from linearize.convert.mixers import MIXERS
from linearize.convert.modeling_linearized import LinearizedForCausalLM
from linearize.convert.plan import parse_keep_attention


class UnknownTargetError(ValueError):
    pass


def check_target(target):
    if target not in MIXERS:
        raise UnknownTargetError(f"unknown target {target!r}: choose one of {', '.join(MIXERS)}")


def versions():
    import transformers

    from linearize import __version__

    return {"linearize": __version__, "transformers": transformers.__version__, "torch": torch.__version__}


def convert(base, target, keep_attention=None, base_name=None, **mixer_settings):
    """Return a ``LinearizedForCausalLM`` made from ``base`` (a loaded HF causal LM).

    target: one of ``MIXERS``; keep_attention: a plan spec (see ``convert.plan``); mixer_settings:
    per-mixer overrides such as ``feature_dim`` or ``window``. Every tensor of the base is reused by
    name; only the mixers' new parameters are freshly initialised.
    """
    check_target(target)
    check_family(base.config.model_type)
    num_layers = base.config.num_hidden_layers
    kept = parse_keep_attention(keep_attention, num_layers)
    template = MIXERS[target](base.config, 0, **mixer_settings)
    mixers = [None if i in kept else template.settings() for i in range(num_layers)]
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
