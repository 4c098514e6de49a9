"""Every conversion target, by name: the mixer class that replaces softmax attention (one module per method)."""

from linearize.convert.gdn import GatedDeltaNetAttention
from linearize.convert.gla import GLAAttention
from linearize.convert.hedgehog import HedgehogAttention
from linearize.convert.linear import EluLinearAttention
from linearize.convert.lolcats import LoLCATsAttention
from linearize.convert.mamba import MambaMixer
from linearize.convert.recurformer import RecurFormerAttention
from linearize.convert.supra import SupraAttention
from linearize.convert.t2r import T2RAttention

MIXERS = {
    cls.target: cls
    for cls in (
        EluLinearAttention,
        T2RAttention,
        HedgehogAttention,
        LoLCATsAttention,
        SupraAttention,
        MambaMixer,
        RecurFormerAttention,
        GLAAttention,
        GatedDeltaNetAttention,
    )
}


def build_mixer(settings, config, layer_idx):
    """Rebuild a mixer from the settings a checkpoint recorded."""
    settings = dict(settings)
    return MIXERS[settings.pop("target")](config, layer_idx, **settings)
