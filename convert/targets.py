"""Every conversion target, by name: the mixer class that replaces softmax attention."""

from linearize.convert.gated_mixers import GatedDeltaNetAttention, GLAAttention
from linearize.convert.mixers import EluLinearAttention, HedgehogAttention, LoLCATsAttention, SupraAttention, T2RAttention
from linearize.convert.ssm_mixers import MambaMixer, RecurFormerAttention

MIXERS = {
    cls.target: cls
    for cls in (EluLinearAttention, T2RAttention, HedgehogAttention, LoLCATsAttention, SupraAttention,
                MambaMixer, RecurFormerAttention, GLAAttention, GatedDeltaNetAttention)
}


def build_mixer(settings, config, layer_idx):
    """Rebuild a mixer from the settings a checkpoint recorded."""
    settings = dict(settings)
    return MIXERS[settings.pop("target")](config, layer_idx, **settings)
