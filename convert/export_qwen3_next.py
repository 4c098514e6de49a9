"""Native export of ``gdn`` hybrids on Qwen3 as transformers' Qwen3-Next (``model_type: qwen3_next``): the same
function, not an approximation.

The mapping:

- ``layer_types`` "linear_attention" (converted) / "full_attention" (kept);
- every MLP as a mixture of one expert (``num_experts`` = ``num_experts_per_tok`` = 1, ``moe_intermediate_size``
  the base's intermediate size): its router's softmax over one expert is exactly 1, so the routed expert, the
  base's gate/up/down, is the dense MLP; the shared expert, which Qwen3-Next always adds (times a sigmoid gate), has
  zero weights and adds exactly 0. llama.cpp's Qwen3-Next has no dense MLP (it refuses a model without experts)
  and vLLM's expects mixture-of-experts layers; transformers runs both forms;
- every RMSNorm the host zero-centres (computes x_hat * (1 + w)) stored as w - 1: the input and
  post-attention layer norms, the final norm and the attention's q/k norms; the Gated DeltaNet's output norm
  is not zero-centred in the host and is stored as it is;
- kept layers: Qwen3-Next's gated attention, whose q_proj rows are per head [query; gate]: the gate rows are
  zero, so sigmoid(gate) = 0.5 everywhere, and o_proj is doubled (both exact in floating point);
  ``partial_rotary_factor`` 1.0 (Qwen3 rotates the whole head);
- Gated DeltaNet layers: ``linear_num_key_heads`` = ``linear_num_value_heads`` = the query heads,
  ``linear_key_head_dim`` = ``linear_value_head_dim`` = head_dim; ``in_proj_qkvz`` rows per head
  [q; k; v; z] = [q_proj * q_norm weight; k_proj * k_norm weight; v_proj; z_proj] with k and v repeated from
  the KV heads (GQA); ``in_proj_ba`` rows per head [b; a] = [b_proj; a_proj]; the depthwise conv over q|k|v
  with its k and v channels repeated likewise; A_log, dt_bias, the norm weight and out_proj (= o_proj) as
  they are.
"""

import torch

from linearize.convert.export_native import ExportError, Host, layer_types, per_head, register
from linearize.convert.families import head_dim

# The zero shared expert's width: the smallest that quantizes in llama.cpp (q8_0 stores rows in blocks of 32).
SHARED_EXPERT = 32


def check_layer(i, m):
    """Layer i's mixer settings ``m`` have a host form."""
    if not m.get("conv_kernel", 4) or not m.get("gate", True):
        raise ExportError(
            f"layer {i}: a gdn mixer without its convolution or output gate (conv_kernel="
            f"{m.get('conv_kernel', 4)}, gate={m.get('gate', True)}) has no Qwen3-Next form; "
            "export supports the default gdn mixer (conv_kernel >= 1, gate on)"
        )


def check_base(base):
    """The base's shapes and biases have a host form."""
    if getattr(base, "attention_bias", False):
        raise ExportError(
            "attention_bias=True: Qwen3-Next's Gated DeltaNet projections have no biases; export "
            "supports Qwen3 bases without attention biases"
        )


def native_config(model):
    """The Qwen3NextConfig of a gdn model on a Qwen3 base: one-expert MLPs everywhere, full rotary, the linear layers'
    heads and head size those of the base's attention. An all-gdn export gets a pass-through attention layer, last
    (see ``export_native.layer_types``)."""
    from transformers import Qwen3NextConfig

    base = model.config.get_base_config()
    H, Hkv, D = base.num_attention_heads, base.num_key_value_heads, head_dim(base)
    mixers = model.config.mixers
    kernel = next((m.get("conv_kernel", 4) for m in mixers if m), 4)
    types = layer_types(mixers)
    rope = {**base.rope_parameters, "partial_rotary_factor": 1.0}
    config = Qwen3NextConfig(
        vocab_size=base.vocab_size,
        hidden_size=base.hidden_size,
        intermediate_size=base.intermediate_size,
        num_hidden_layers=len(types),
        num_attention_heads=H,
        num_key_value_heads=Hkv,
        head_dim=D,
        hidden_act="silu",
        max_position_embeddings=base.max_position_embeddings,
        initializer_range=base.initializer_range,
        rms_norm_eps=base.rms_norm_eps,
        pad_token_id=base.pad_token_id,
        bos_token_id=base.bos_token_id,
        eos_token_id=base.eos_token_id,
        tie_word_embeddings=bool(base.tie_word_embeddings),
        rope_parameters=rope,
        partial_rotary_factor=1.0,
        attention_bias=False,
        attention_dropout=float(getattr(base, "attention_dropout", 0.0) or 0.0),
        linear_conv_kernel_dim=kernel,
        linear_key_head_dim=D,
        linear_value_head_dim=D,
        linear_num_key_heads=H,
        linear_num_value_heads=H,
        num_experts=1,
        num_experts_per_tok=1,
        norm_topk_prob=True,
        moe_intermediate_size=base.intermediate_size,
        shared_expert_intermediate_size=SHARED_EXPERT,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        layer_types=types,
    )
    config.architectures = ["Qwen3NextForCausalLM"]
    config.dtype = model.dtype
    return config


def _centred(w):
    """A norm weight for the host's zero-centred RMSNorm, which multiplies by (1 + w): w - 1 (in fp32)."""
    return (w.float() - 1).to(w.dtype)


def native_state_dict(model, config):
    """The converted model's tensors under Qwen3-Next's names and layout (see this module's docstring)."""
    base = model.model.base_config
    H, Hkv, D = base.num_attention_heads, base.num_key_value_heads, head_dim(base)
    G, hidden = H // Hkv, base.hidden_size
    sd = {
        "model.embed_tokens.weight": model.model.embed_tokens.weight,
        "model.norm.weight": _centred(model.model.norm.weight),
    }
    if not config.tie_word_embeddings:
        sd["lm_head.weight"] = model.lm_head.weight
    like = model.model.embed_tokens.weight

    def zeros(*shape):
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    def scaled(linear, norm, heads):
        """Rows [heads * D, hidden] of a projection times Qwen3's q/k norm weight (a per-channel scale)."""
        w = linear.weight.float().view(heads, D, hidden)
        if norm is not None:
            w = w * norm.weight.float().view(1, D, 1)
        return w.to(linear.weight.dtype)

    def moe(p, gate, up, down):
        """A dense MLP as the host's mixture of one expert: the router (zero logits, one expert: weight exactly 1), the
        expert, and a shared expert and its gate of zeros."""
        inner = config.shared_expert_intermediate_size
        return {
            p + "mlp.gate.weight": zeros(1, hidden),
            p + "mlp.experts.gate_up_proj": torch.cat([gate, up])[None],
            p + "mlp.experts.down_proj": down[None],
            p + "mlp.shared_expert.gate_proj.weight": zeros(inner, hidden),
            p + "mlp.shared_expert.up_proj.weight": zeros(inner, hidden),
            p + "mlp.shared_expert.down_proj.weight": zeros(hidden, inner),
            p + "mlp.shared_expert_gate.weight": zeros(1, hidden),
        }

    if len(config.layer_types) > len(model.model.layers):  # the pass-through layer, last
        p, inner = f"model.layers.{len(model.model.layers)}.", base.intermediate_size
        for n, shape in (
            ("input_layernorm", (hidden,)),
            ("post_attention_layernorm", (hidden,)),
            ("self_attn.q_norm", (D,)),
            ("self_attn.k_norm", (D,)),
            ("self_attn.q_proj", (2 * H * D, hidden)),
            ("self_attn.k_proj", (Hkv * D, hidden)),
            ("self_attn.v_proj", (Hkv * D, hidden)),
            ("self_attn.o_proj", (hidden, H * D)),
        ):
            sd[p + n + ".weight"] = zeros(*shape)
        sd.update(moe(p, zeros(inner, hidden), zeros(inner, hidden), zeros(hidden, inner)))
    for i, layer in enumerate(model.model.layers):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = _centred(layer.input_layernorm.weight)
        sd[p + "post_attention_layernorm.weight"] = _centred(layer.post_attention_layernorm.weight)
        sd.update(moe(p, layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight, layer.mlp.down_proj.weight))
        attn = layer.self_attn
        if config.layer_types[i] == "full_attention":
            a = p + "self_attn."
            q = attn.q_proj.weight.view(H, D, hidden)
            sd[a + "q_proj.weight"] = torch.stack([q, torch.zeros_like(q)], 1).reshape(2 * H * D, hidden)  # [q; gate]
            sd[a + "k_proj.weight"], sd[a + "v_proj.weight"] = attn.k_proj.weight, attn.v_proj.weight
            sd[a + "o_proj.weight"] = attn.o_proj.weight * 2  # undoes sigmoid(0) = 0.5
            sd[a + "q_norm.weight"], sd[a + "k_norm.weight"] = (
                _centred(attn.q_norm.weight),
                _centred(attn.k_norm.weight),
            )
            continue
        m = p + "linear_attn."
        q, k = scaled(attn.q_proj, attn.q_norm, H), scaled(attn.k_proj, attn.k_norm, Hkv).repeat_interleave(G, 0)
        v = attn.v_proj.weight.view(Hkv, D, hidden).repeat_interleave(G, 0)
        z = attn.z_proj.weight.view(H, D, hidden)
        sd[m + "in_proj_qkvz.weight"] = torch.stack([q, k, v, z], 1).reshape(4 * H * D, hidden)
        sd[m + "in_proj_ba.weight"] = torch.stack([attn.b_proj.weight, attn.a_proj.weight], 1).reshape(2 * H, hidden)
        cq, ck, cv = torch.split(attn.conv_weight, [H * D, Hkv * D, Hkv * D])
        sd[m + "conv1d.weight"] = torch.cat([cq, per_head(ck, Hkv, G), per_head(cv, Hkv, G)])[:, None]
        sd[m + "dt_bias"], sd[m + "A_log"] = attn.dt_bias, attn.A_log
        sd[m + "norm.weight"] = attn.norm_weight
        sd[m + "out_proj.weight"] = attn.o_proj.weight
    return {k: v.detach().contiguous() for k, v in sd.items()}


def model_card(config, source, layers, name="PATH"):
    """A short README.md: what the folder is and which engines run it (``layers``: the converted model's)."""
    kinds = config.layer_types[:layers]
    linear = sum(t == "linear_attention" for t in kinds)
    kept = [i for i, t in enumerate(kinds) if t != "linear_attention"]
    origin = f" from `{source}`" if source else ""
    note = ""
    if len(config.layer_types) > layers:
        note = (
            f"\nLayer {layers} is a pass-through attention layer (zero projections and MLP: it adds exactly 0), "
            "added because transformers' Qwen3-Next cannot run with a cache when no layer is attention; it keeps "
            "one layer's KV cache (of zeros).\n"
        )
    return f"""---
library_name: transformers
tags: [linearize, gated-deltanet, hybrid, qwen3_next]
---

# {name}

A [linearize](https://pypi.org/project/linearize/) checkpoint{origin} exported to transformers' own
**Qwen3-Next** architecture (`model_type: qwen3_next`): {linear} of {layers} layers are Gated DeltaNet layers
converted from attention{f", layers {kept} keep softmax attention" if kept else ""}. The weights are those of the
converted model, laid out as Qwen3-Next's (each MLP a mixture of one expert that always takes the whole weight,
beside a shared expert of zeros; full rotary; zero-centred
norms stored as weight - 1; the attention's output gate fixed at 0.5 by zero gate weights, with o_proj doubled),
so it computes the same function with no remote code.
{note}
```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{name}")
tokenizer = AutoTokenizer.from_pretrained("{name}")
```

Engines: transformers runs Qwen3-Next natively (linearize's tests check that exports give the converted model's
logits and greedy tokens there). llama.cpp: convert with its `convert_hf_to_gguf.py ... --no-mtp` (the model has no
multi-token-prediction head). vLLM and SGLang list Qwen3-Next (read, not run).
"""


def config_json(written, config, rope):
    """Qwen's Qwen3-Next config.json has partial_rotary_factor at the top (transformers maps it back into
    rope_parameters)."""
    written["partial_rotary_factor"] = rope.pop("partial_rotary_factor")


register(
    Host(
        target="gdn",
        families=("qwen3",),
        model_type="qwen3_next",
        name="Qwen3-Next",
        model_class="Qwen3NextForCausalLM",
        check_layer=check_layer,
        check_base=check_base,
        config=native_config,
        state_dict=native_state_dict,
        card=model_card,
        config_json=config_json,
    )
)
