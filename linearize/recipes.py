"""The main job's presets, one per published method: ``linearize --base BASE --recipe NAME`` converts and trains as
that method's paper does (its layer, which layers stay softmax, which parameters train, on which objective), at the
base, data and budget the command gives. The cookbook runs the same presets at their published scale.

A preset fills only what the command line leaves unset: ``--recipe liger --window 128`` is Liger with a wider
window. The main job prints the flags a preset amounts to and records them in the checkpoint's
``config.linearize["recipe"]``. Without ``--recipe`` the default target takes the ``lolcats`` preset (the main job's
own recipe, ``pipeline.MAIN_RECIPE``).
"""

from dataclasses import dataclass, field, fields

from linearize.convert.settings import ConvertSettings
from linearize.errors import SettingError
from linearize.pipeline import KEEP_SHARE, MAIN_RECIPE, recipe_keep_attention

NO_TRANSFER = {"skip": True}


@dataclass(frozen=True)
class Recipe:
    target: str
    about: str  # one line: the method, its paper, what the preset sets
    settings: dict = field(default_factory=dict)  # convert settings: the mixer's, and rank_by
    keep_share: float | None = None  # auto:N with N this share of the base's layers (ranked as settings say)
    keep_attention: str | None = None  # else a plan spec (None: the target's default)
    stages: dict = field(default_factory=dict)  # the main job's stage_overrides

    def keep(self, num_layers):
        """The plan spec for a base of ``num_layers`` layers."""
        if self.keep_share is not None:
            return recipe_keep_attention(num_layers, self.keep_share)
        return self.keep_attention

    def record(self, name, num_layers, settings=None, keep_attention=None):
        """What the checkpoint records (and the main job prints): the preset's name and what it set, with the
        command line's own values where it gave them."""
        given = settings or {}
        merged = {**self.settings, **given}
        if merged.get("window") == 0 and "sparse_cache" not in given:  # the sparse cache lives beside a window
            merged.pop("sparse_cache", None)
        return {
            "name": name,
            "about": self.about,
            "target": self.target,
            "keep_attention": keep_attention or self.keep(num_layers),
            "convert_settings": merged,
            "stage_overrides": {stage: dict(v) for stage, v in self.stages.items()},
        }


# Liger's layer (Lan et al., ICML 2025; OpenSparseLLMs/Linearization liger_gla): GLA with softmax feature maps, gate
# logsigmoid(k) / 16, no rotary and no normaliser on the linear branch, beside a 64-token softmax window, mixed 0.5/0.5.
LIGER_LAYER = dict(feature_map="softmax", rotary=False, normalize=False, window=64)
LIGER_KD = dict(lr=1e-3, train="lora", lora_r=8, lora_alpha=8, lora_targets=("q_proj", "k_proj", "v_proj"))
# The Mamba in the Llama (Wang et al., NeurIPS 2024): softmax kept in a share of the layers, the rest Mamba layers
# from the attention weights, every mixer parameter trained end to end on the KL to the teacher (no transfer stage;
# their optional stepwise alignment is not part of the preset).
MAMBA_KD = dict(train="attention")
# Distilling to hybrid attention via KL-guided layer selection (fla-org/hybrid-distillation, its "gdn_v4" student):
# Gated DeltaNet with an output gate and no short convolution, q/k/v/o from the attention; stage 1 aligns each
# converted layer's output with its attention's (MSE, lr 1e-3, only the new layers train), stage 2 distils the
# hybrid's logits by KL with every weight training (lr 1e-4 on attention layers, 7e-6 elsewhere: one rate here),
# a quarter of the layers softmax. Their selector restores one layer at a time to softmax and ranks by the stage-2
# loss it buys; ours ranks by the KL of converting one layer at a time (--rank-by kl), no training per layer.
GDN_LAYER = dict(conv_kernel=0, gate=True)


def mamba_in_llama(share):
    """The Mamba in the Llama with ``share`` of the layers softmax (the paper's 50% and 25% hybrids)."""
    return Recipe(
        "mamba",
        f"The Mamba in the Llama (Wang et al., NeurIPS 2024): {share:.0%} of the layers stay softmax (ranked by KL), "
        "the rest Mamba-2; every mixer parameter trained on the KL alone",
        settings={"rank_by": "kl"},
        keep_share=share,
        stages={"transfer": NO_TRANSFER, "kd": MAMBA_KD},
    )


RECIPES = {
    "lolcats": Recipe(
        "lolcats",
        "the main job's default: LoLCATs layers (Zhang et al., ICLR 2025) with a learned decay and 4 sinks, softmax "
        f"kept in {KEEP_SHARE:.0%} of the layers ranked by KL on multi-key retrieval probes",
        settings=dict(MAIN_RECIPE),
        keep_share=KEEP_SHARE,
    ),
    "liger": Recipe(
        "gla",
        "Liger (Lan et al., ICML 2025): GLA + a 64-token softmax window mixed 0.5/0.5 on every layer; KD only, "
        "LoRA r=8 on q/k/v at lr 1e-3",
        settings=LIGER_LAYER,
        keep_attention="none",
        stages={"transfer": NO_TRANSFER, "kd": LIGER_KD},
    ),
    **{f"mamba-in-llama-{share}": mamba_in_llama(share / 100) for share in (50, 25)},
    "supra": Recipe(
        "supra",
        "SUPRA (Mercat et al., COLM 2024): every layer decayed linear attention with a GroupNorm; all weights "
        "uptrained on next-token cross-entropy (here plus the KL), no transfer stage",
        keep_attention="none",
        stages={"transfer": NO_TRANSFER, "kd": dict(train="all", ce_weight=1.0)},
    ),
    "gated-deltanet": Recipe(
        "gdn",
        "KL-guided hybrid distillation (fla-org/hybrid-distillation): Gated DeltaNet with an output gate and no short "
        "convolution, 25% of the layers softmax (ranked by KL); attention transfer at lr 1e-3, then the KL with every "
        "weight trained at lr 1e-4",
        settings={**GDN_LAYER, "rank_by": "kl"},
        keep_share=0.25,
        stages={"transfer": dict(lr=1e-3), "kd": dict(train="all", lr=1e-4)},
    ),
    "recurformer": Recipe(
        "recurformer",
        "RecurFormer (Yan et al., 2024): the most local half of the heads become Mamba heads, the rest keep softmax",
        settings={"recency_fraction": 0.5},
    ),
}


def get_recipe(name):
    """The preset called ``name``, or one error line naming the ones there are."""
    if name not in RECIPES:
        raise SettingError(f"unknown --recipe {name!r}: choose from {', '.join(RECIPES)}")
    return RECIPES[name]


def as_flags(record):
    """A recorded preset as the command line it amounts to (the settings that have no flag as key=value)."""
    parts = [f"--to {record['target']}"]
    if record["keep_attention"]:
        parts.append(f"--keep-attention {record['keep_attention']}")
    flags = {f.name for f in fields(ConvertSettings)}
    for key, value in sorted(record["convert_settings"].items()):  # sorted: as the saved config holds them
        parts.append(f"--{key.replace('_', '-')} {value}" if key in flags else f"{key}={value}")
    for stage in ("transfer", "kd"):
        overrides = record["stage_overrides"].get(stage)
        if overrides and overrides.get("skip"):
            parts.append(f"({stage} skipped)")
        elif overrides:
            shown = (f"{k}={','.join(v) if isinstance(v, (list, tuple)) else v}" for k, v in sorted(overrides.items()))
            parts.append(f"({stage}: {', '.join(shown)})")
    return " ".join(parts)
