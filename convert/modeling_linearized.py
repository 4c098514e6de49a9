"""A converted model: the base family's decoder stack with mixers in place of some attention modules.

Parameter names match the base model's (``model.layers.N.self_attn.q_proj.weight`` ...), so base
weights load by name and non-attention tensors carry over unchanged. Saved checkpoints carry this
file and the ones it imports, flattened, for ``trust_remote_code`` loading without linearize.
"""

import torch
from torch import nn
from transformers import DynamicCache, GenerationMixin, PreTrainedModel
from transformers.generation.configuration_utils import GenerationMode
from transformers.masking_utils import LAYER_PATTERN_TO_MASK_FUNCTION_MAPPING, find_packed_sequence_indices
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from linearize.convert.configuration_linearized import LinearizedConfig
from linearize.convert.families import family, head_dim
from linearize.convert.mixer_base import Mixer, Packing, step_rotation
from linearize.convert.state_cache import advance, prepare, seen_tokens
from linearize.convert.targets import build_mixer

try:  # the package writes the modeling code flat beside the weights; as remote code, transformers copies it
    from linearize.convert.bundle import write_remote_code
except ImportError:
    write_remote_code = None

AUTO_MAP = {
    "AutoConfig": "configuration_linearized.LinearizedConfig",
    "AutoModel": "modeling_linearized.LinearizedModel",
    "AutoModelForCausalLM": "modeling_linearized.LinearizedForCausalLM",
}


class LinearizedPreTrainedModel(PreTrainedModel):
    config_class = LinearizedConfig
    config: LinearizedConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False
    # Every family's decoder layer is a GradientCheckpointingLayer (matched by isinstance), and every layer's attention
    # sits at a path ending in "self_attn" (matched by suffix): a mixer's None in the weights' place is not recorded,
    # so attentions are the kept softmax layers' maps, as transformers' Qwen3-Next gives them.
    _can_record_outputs = {
        "hidden_states": GradientCheckpointingLayer,
        "attentions": OutputRecorder(target_class=None, index=1, class_name="self_attn"),
    }

    def _init_weights(self, module):
        # Mixers and feature maps own their initialisation (identity feature maps, zero mixing logits).
        if hasattr(module, "reset_linearize_parameters"):
            module.reset_linearize_parameters()
        else:
            super()._init_weights(module)


class LinearizedModel(LinearizedPreTrainedModel):
    def __init__(self, config: LinearizedConfig):
        super().__init__(config)
        base = config.get_base_config()
        self.base_config = base
        fam = family(base.model_type)
        self.padding_idx = base.pad_token_id
        self.embed_tokens = nn.Embedding(base.vocab_size, base.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([fam.decoder_layer(base, i) for i in range(base.num_hidden_layers)])
        declared = {}
        for i, settings in enumerate(config.mixers):
            if settings is not None:
                self.layers[i].self_attn = mixer = build_mixer(settings, base, i)
                declared[i] = mixer.cache_layout()
        config.record_cache_layers(declared)  # the cache layers the mixers need, saved with the config
        self.norm = fam.norm(base.hidden_size, eps=base.rms_norm_eps)
        self.rotary_emb = fam.rotary(config=base)
        self.apply_rotary = fam.apply_rotary
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @capture_outputs
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        **kwargs,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if use_cache is None:  # the config's default (the base's), outside training: a state costs work to keep
            use_cache = getattr(self.config, "use_cache", False) and not self.training
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        cache = prepare(cache)
        T = inputs_embeds.shape[1]
        past = seen_tokens(cache)
        packing = None
        if position_ids is not None and attention_mask is None and cache is None:
            # Several sequences in a row (restarting positions), as transformers' masks detect them for the softmax
            # layers: the mixers run each on a row of its own.
            B = inputs_embeds.shape[0]
            index = find_packed_sequence_indices(position_ids.expand(B, -1))
            if index is not None:
                packing = Packing.from_positions(index, position_ids)
        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[1] == past + T:
                # Left padding: positions count real tokens only, as generate() does.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, -T:]
            else:
                position_ids = torch.arange(past, past + T, device=inputs_embeds.device)[None]
        self.base_config._attn_implementation = self.config._attn_implementation
        padding = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
        mixers, layer_types = self.config.mixers, self.config.layer_types  # read once: a config read costs a lookup
        masks = {}
        for i, layer_type in enumerate(layer_types):
            if mixers[i] is None and layer_type not in masks:
                masks[layer_type] = LAYER_PATTERN_TO_MASK_FUNCTION_MAPPING[layer_type](
                    config=self.base_config,
                    inputs_embeds=inputs_embeds,
                    attention_mask=attention_mask,
                    cache=cache,
                    position_ids=position_ids,
                    layer_idx=i,
                )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        mixer_kwargs = dict(kwargs)
        if packing is not None:
            mixer_kwargs["packing"] = packing
        if T == 1:  # a decode step: what every mixer's step would otherwise remake, made once
            mixer_kwargs["step_rotation"] = step_rotation(self.apply_rotary, *position_embeddings, len(hidden_states))
            if position_ids.device.type == "cpu":  # read on the host: free on CPU, a stall on a GPU stream
                mixer_kwargs["step_first_position"] = int(position_ids.min())
        for i, decoder_layer in enumerate(self.layers):
            mixed = mixers[i] is not None
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=padding if mixed else masks[layer_types[i]],
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **(mixer_kwargs if mixed else kwargs),
            )
        advance(cache, T)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache)


class LinearizedForCausalLM(LinearizedPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LinearizedConfig):
        super().__init__(config)
        self.model = LinearizedModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep=0,
        **kwargs,
    ):
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,  # the object inside, whatever the config says (Llama breaks on config.return_dict=False)
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:]
        elif not isinstance(logits_to_keep, int):
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @property
    def _supported_generation_modes(self):
        """Every mode but assisted (speculative) decoding where a layer keeps a recurrent state: a rejected draft
        token cannot be taken back out of it, so generate refuses up front rather than after the prefill."""
        modes = tuple(GenerationMode)
        if any(settings is not None for settings in self.config.mixers):
            modes = tuple(m for m in modes if m != GenerationMode.ASSISTED_GENERATION)
        return modes

    # -- introspection used by the CLI summary and the model card ---------------------------------
    def mixers(self):
        """{layer index: mixer} for the converted layers."""
        return {i: layer.self_attn for i, layer in enumerate(self.model.layers) if isinstance(layer.self_attn, Mixer)}

    def cache_bytes(self, seq_len, batch_size=1):
        """(bytes of decode state at ``seq_len`` tokens, bytes the base's KV cache would take)."""
        base = self.model.base_config
        kv_per_layer = 2 * batch_size * seq_len * base.num_key_value_heads * head_dim(base) * self.dtype.itemsize
        mixers = self.mixers()
        state = sum(m.state_bytes(batch_size, seq_len) for m in mixers.values())
        state += kv_per_layer * (base.num_hidden_layers - len(mixers))
        return state, kv_per_layer * base.num_hidden_layers

    def save_pretrained(self, save_directory, *args, **kwargs):
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        if write_remote_code is not None:
            write_remote_code(save_directory)
