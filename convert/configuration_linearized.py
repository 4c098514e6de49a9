"""Config of a converted model: the base's config, plus which layers became which mixer."""

from transformers import AutoConfig, PreTrainedConfig

from linearize.convert.families import base_layer_types

# Base fields mirrored at the top level, where generation, caches and pipelines look for them.
MIRRORED = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "rms_norm_eps",
    "initializer_range",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "sliding_window",
    "rope_parameters",
    "use_cache",
)


class LinearizedConfig(PreTrainedConfig):
    """``base_config``: the base model's config as a dict; ``mixers``: per layer, None where softmax
    attention stays, else the mixer settings (``{"target": "lolcats", ...}``); ``linearize``: provenance
    (base name, plan, library versions, distillation history).

    ``layer_types`` and ``per_layer_config`` follow transformers' cache convention so that
    ``DynamicCache(config=...)`` holds recurrent states (``linear_attention``), a window plus a state
    (``hybrid_sliding``), a state plus a KV cache (``hybrid``) or a KV cache: for a converted layer, what its
    mixer declares, recorded by the model built from this config and saved with it.
    """

    model_type = "linearized"

    def __init__(self, base_config=None, mixers=None, linearize=None, **kwargs):
        base_config = dict(base_config or {})
        if "id2label" in base_config:  # kept as JSON has it (string keys), so the config reads back as it was saved
            base_config["id2label"] = {str(k): v for k, v in base_config["id2label"].items()}
        # One source: the mirrored fields live at the top level only (where resize_token_embeddings and
        # generation change and read them); the rest of the base's fields stay in base_config.
        for key in MIRRORED:
            if key in base_config:
                kwargs.setdefault(key, base_config.pop(key))
        self.base_config = base_config
        kwargs.setdefault("num_hidden_layers", 0)
        mixers = list(mixers) if mixers is not None else [None] * kwargs["num_hidden_layers"]
        if len(mixers) != kwargs["num_hidden_layers"]:
            raise ValueError(f"mixers has {len(mixers)} entries for {kwargs['num_hidden_layers']} layers")
        self.mixers = mixers
        self.linearize = dict(linearize or {})
        full = {**base_config, **{k: kwargs[k] for k in MIRRORED if k in kwargs}}
        kwargs.setdefault("sliding_window", None)  # per-layer windows override a global value, which must exist
        kwargs.setdefault("number_of_conv_states", 1)  # likewise the number of states per cache layer
        layer_types, per_layer = kwargs.pop("layer_types", None), kwargs.pop("per_layer_config", None)
        if layer_types is None or len(layer_types) != len(mixers):
            # Not recorded yet (a new conversion): a converted layer reads "linear_attention" until the model built
            # from this config records what its mixer declares (``record_cache_layers``).
            base_types = base_layer_types(_base(full)) if "model_type" in full else ["full_attention"] * len(mixers)
            layer_types = [
                base_types[i] if settings is None else "linear_attention" for i, settings in enumerate(mixers)
            ]
            per_layer = None
        # The base's (True if it has none, as transformers' decoder configs); transformers' config drops generation
        # parameters it does not declare, so it is set after. The model caches by default outside training only.
        use_cache = kwargs.pop("use_cache", True)
        super().__init__(layer_types=layer_types, per_layer_config=per_layer or None, **kwargs)
        self.use_cache = use_cache

    def record_cache_layers(self, declared):
        """Record the cache layer each converted layer's mixer declares, ``{layer index: (layer type, per-layer
        cache config)}`` (``Mixer.cache_layout``), as transformers' ``layer_types`` and ``per_layer_config``, from
        which ``DynamicCache(config=...)`` builds its layers; the checkpoint saves them, and loading reads them."""
        layer_types = list(self.layer_types)
        for i, (layer_type, _) in declared.items():
            layer_types[i] = layer_type
        self.layer_types = layer_types
        self.per_layer_config = {i: dict(extra) for i, (_, extra) in sorted(declared.items()) if extra} or None

    def get_base_config(self):
        """The base family's own config object, from which its decoder layers are built: base_config plus
        the mirrored fields as they are now at the top level."""
        base = _base({**self.base_config, **{k: vars(self)[k] for k in MIRRORED if k in vars(self)}})
        base._attn_implementation = self._attn_implementation
        return base


def _base(base_config):
    fields = {k: v for k, v in base_config.items() if k not in ("model_type", "transformers_version", "architectures")}
    return AutoConfig.for_model(base_config["model_type"], **fields)
