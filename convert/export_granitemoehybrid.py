"""Native export of ``mamba`` hybrids as transformers' GraniteMoeHybrid (``model_type: granitemoehybrid``), from a
Llama, Mistral or Qwen2 base: the same function, not an approximation.

The mapping:

- kept softmax layers: GraniteMoeHybrid attention with ``attention_multiplier = head_dim**-0.5`` (its
  scaling), RoPE (``position_embedding_type="rope"``, the base's ``rope_parameters``), the base's q/k/v/o
  weights; Qwen2's q/k/v biases through ``attention_bias`` (o_proj's bias is then zero);
- MLPs: a dense gated MLP (``num_local_experts=0``, ``shared_intermediate_size`` = the base's
  intermediate size): ``shared_mlp.input_linear`` = [gate_proj; up_proj] (the host applies the activation
  to the first half), ``output_linear`` = down_proj;
- Mamba layers: one ``in_proj`` = [z, x, B, C, dt] rows = [z_proj, v_proj, k_proj, q_proj, dt_proj], with
  the KV-head rows of x and B repeated to the query heads (GQA) and ``mamba_n_groups`` = heads, so B, C
  and the gated norm are per head; ``mamba_d_state`` = ``mamba_d_head`` = head_dim; the depthwise conv over
  x|B|C reordered from ours (C|B|x) and repeated likewise; no ``in_proj`` bias: the q/k/v biases go into the
  conv's bias as our mixer adds them (``MambaMixer.relative_to_zero_state``), so the host, which zeroes padded
  hidden states before ``in_proj``, sees zeros at padded positions and left padding stays exact
  (``mamba_proj_bias`` only where o_proj has a bias); A_log, D, dt_bias and the norm weight as they are;
- embedding, residual and logits multipliers 1;
- the Mamba width doubled (``mamba_expand`` 2, as IBM's checkpoints have it: llama.cpp supports no other
  expansion) by padded heads, heads H..2H-1 after the H real ones, each its own group (``mamba_n_groups`` =
  ``mamba_n_heads`` = 2H, so every norm group is still one head): their in_proj rows, conv channels, norm weight
  and out_proj columns are zero, so their x, B and state stay zero and they add exactly 0 to the output;
- ``num_local_experts`` = ``num_experts_per_tok`` = 0 (llama.cpp asserts the second is at most the first).

Engines that read the config differently get the fields they need (``config_json``).
"""

import torch

from linearize.convert.export_native import ExportError, Host, layer_types, per_head, register
from linearize.convert.families import head_dim

# The Mamba width as a multiple of the hidden size: the converted layers' own is 1 (heads x head_dim = hidden size);
# llama.cpp's GraniteMoeHybrid supports only 2 (``GGML_ASSERT(2 * n_embd == d_inner)``), so the export pads heads.
MAMBA_EXPAND = 2


def check_layer(i, m):
    """Layer i's mixer settings ``m`` have a host form."""
    if not m.get("conv_kernel", 4) or not m.get("gate", True):
        raise ExportError(
            f"layer {i}: a mamba mixer without its convolution or gated norm (conv_kernel="
            f"{m.get('conv_kernel', 4)}, gate={m.get('gate', True)}) has no GraniteMoeHybrid form; "
            "export supports the default mamba mixer (conv_kernel >= 1, gate on)"
        )


def check_base(base):
    """The base's shapes and biases have a host form."""
    heads, dim, hidden = base.num_attention_heads, head_dim(base), base.hidden_size
    if heads * dim != hidden:
        raise ExportError(
            f"heads x head_dim = {heads} x {dim} = {heads * dim} differs from hidden_size {hidden}; "
            "GraniteMoeHybrid (as transformers and vLLM build it) needs them equal"
        )
    if getattr(base, "mlp_bias", False):
        raise ExportError("mlp_bias=True: GraniteMoeHybrid's MLP has no biases; export supports bias-free MLPs")


def native_config(model):
    """The GraniteMoeHybridConfig of a converted model (an all-Mamba export gets a pass-through attention layer,
    last: see ``export_native.layer_types``)."""
    from transformers import GraniteMoeHybridConfig

    base = model.config.get_base_config()
    H, Hkv, D = base.num_attention_heads, base.num_key_value_heads, head_dim(base)
    mixers = model.config.mixers
    kernel = next((m.get("conv_kernel", 4) for m in mixers if m), 4)
    bias = any(
        getattr(model.model.layers[i].self_attn, n).bias is not None
        for i in range(base.num_hidden_layers)
        for n in ("q_proj", "k_proj", "v_proj", "o_proj")
    )
    out_bias = any(model.model.layers[i].self_attn.o_proj.bias is not None for i, m in enumerate(mixers) if m)
    heads = MAMBA_EXPAND * base.hidden_size // D  # H real heads, the rest padding (check_base: H * D == hidden)
    config = GraniteMoeHybridConfig(
        vocab_size=base.vocab_size,
        hidden_size=base.hidden_size,
        intermediate_size=base.intermediate_size,
        shared_intermediate_size=base.intermediate_size,
        num_local_experts=0,
        num_experts_per_tok=0,
        num_hidden_layers=len(layer_types(mixers)),
        num_attention_heads=H,
        num_key_value_heads=Hkv,
        hidden_act="silu",
        max_position_embeddings=base.max_position_embeddings,
        initializer_range=base.initializer_range,
        rms_norm_eps=base.rms_norm_eps,
        pad_token_id=base.pad_token_id,
        bos_token_id=base.bos_token_id,
        eos_token_id=base.eos_token_id,
        tie_word_embeddings=bool(base.tie_word_embeddings),
        rope_parameters=dict(base.rope_parameters),
        attention_bias=bias,
        attention_dropout=float(getattr(base, "attention_dropout", 0.0) or 0.0),
        embedding_multiplier=1.0,
        logits_scaling=1.0,
        residual_multiplier=1.0,
        attention_multiplier=D**-0.5,
        position_embedding_type="rope",
        layer_types=layer_types(mixers),
        mamba_n_heads=heads,
        mamba_n_groups=heads,
        mamba_d_state=D,
        mamba_d_head=D,
        mamba_d_conv=kernel,
        mamba_expand=MAMBA_EXPAND,
        mamba_conv_bias=True,
        mamba_proj_bias=out_bias,
    )
    config.architectures = ["GraniteMoeHybridForCausalLM"]
    config.dtype = model.dtype
    return config


def native_state_dict(model, config):
    """The converted model's tensors under GraniteMoeHybrid's names and layout."""
    base = model.model.base_config
    H, Hkv, D = base.num_attention_heads, base.num_key_value_heads, head_dim(base)
    G, P = H // Hkv, config.mamba_n_heads - H  # P padded heads
    sd = {"model.embed_tokens.weight": model.model.embed_tokens.weight, "model.norm.weight": model.model.norm.weight}
    if not config.tie_word_embeddings:
        sd["lm_head.weight"] = model.lm_head.weight

    like = model.model.embed_tokens.weight

    def zeros(*shape):
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    def bias(linear):
        return linear.bias if linear.bias is not None else zeros(linear.out_features)

    def padded(*parts, size):
        """Each part (rows per real head) followed by zero rows for the padded heads (``size`` rows per head)."""
        return torch.cat([t for part in parts for t in (part, zeros(P * size, *part.shape[1:]))])

    if len(config.layer_types) > len(model.model.layers):  # the pass-through layer, last
        p, hidden, inner = f"model.layers.{len(model.model.layers)}.", base.hidden_size, base.intermediate_size
        sd[p + "input_layernorm.weight"] = torch.ones_like(like[0])
        sd[p + "post_attention_layernorm.weight"] = torch.ones_like(like[0])
        sd[p + "shared_mlp.input_linear.weight"] = zeros(2 * inner, hidden)
        sd[p + "shared_mlp.output_linear.weight"] = zeros(hidden, inner)
        for n, rows in (("q_proj", H * D), ("k_proj", Hkv * D), ("v_proj", Hkv * D), ("o_proj", hidden)):
            sd[p + f"self_attn.{n}.weight"] = zeros(rows, hidden if n != "o_proj" else H * D)
            if config.attention_bias:
                sd[p + f"self_attn.{n}.bias"] = zeros(rows)
    for i, layer in enumerate(model.model.layers):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = layer.input_layernorm.weight
        sd[p + "post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight
        mlp = layer.mlp
        sd[p + "shared_mlp.input_linear.weight"] = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        sd[p + "shared_mlp.output_linear.weight"] = mlp.down_proj.weight
        attn = layer.self_attn
        if config.layer_types[i] == "full_attention":
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                sd[p + f"self_attn.{n}.weight"] = getattr(attn, n).weight
                if config.attention_bias:
                    sd[p + f"self_attn.{n}.bias"] = bias(getattr(attn, n))
            continue
        m = p + "mamba."
        sd[m + "in_proj.weight"] = torch.cat(
            [
                padded(
                    attn.z_proj.weight,
                    per_head(attn.v_proj.weight, Hkv, G),
                    per_head(attn.k_proj.weight, Hkv, G),
                    attn.q_proj.weight,
                    size=D,
                ),
                padded(attn.dt_proj.weight, size=1),
            ]
        )
        if config.mamba_proj_bias:  # for o_proj's bias; the q/k/v biases are in the conv's bias
            sd[m + "in_proj.bias"] = zeros(sd[m + "in_proj.weight"].shape[0])
            sd[m + "out_proj.bias"] = bias(attn.o_proj)
        C, B, x = torch.split(attn.conv_weight, [H * D, Hkv * D, Hkv * D])
        sd[m + "conv1d.weight"] = padded(per_head(x, Hkv, G), per_head(B, Hkv, G), C, size=D)[:, None]
        with torch.no_grad():  # the bias our mixer's convolution adds, q/k/v biases included
            conv_bias = attn.relative_to_zero_state(zeros(1, 1, attn.conv_channels))[1].to(like.dtype)
        C, B, x = torch.split(conv_bias, [H * D, Hkv * D, Hkv * D])
        sd[m + "conv1d.bias"] = padded(per_head(x, Hkv, G), per_head(B, Hkv, G), C, size=D)
        for name in ("dt_bias", "A_log", "D"):
            sd[m + name] = padded(getattr(attn, name), size=1)
        sd[m + "norm.weight"] = padded(attn.norm_weight, size=D)
        sd[m + "out_proj.weight"] = padded(attn.o_proj.weight.T, size=D).T
    return {k: v.detach().contiguous() for k, v in sd.items()}


def model_card(config, source, layers, name="PATH"):
    """A short README.md: what the folder is and which engines run it (``layers``: the converted model's)."""
    kinds = config.layer_types[:layers]
    mamba = sum(t == "linear_attention" for t in kinds)
    kept = [i for i, t in enumerate(kinds) if t != "linear_attention"]
    origin = f" from `{source}`" if source else ""
    notes = [
        f"Its Mamba layers have {config.mamba_n_heads} heads, of which the last "
        f"{config.mamba_n_heads - config.hidden_size // config.mamba_d_head} are "
        "padding (zero projections, convolution and output: they add exactly 0), because llama.cpp runs "
        "GraniteMoeHybrid only with a Mamba width of twice the hidden size."
    ]
    if len(config.layer_types) > layers:
        notes.append(
            f"Layer {layers} is a pass-through attention layer (zero output and MLP projections: it adds "
            "exactly 0), added because transformers' GraniteMoeHybrid cannot run with a cache when no "
            "layer is attention; it keeps one layer's KV cache (of zeros)."
        )
    notes = "".join(f"\n{n}\n" for n in notes)
    return f"""---
library_name: transformers
tags: [linearize, mamba2, hybrid, granitemoehybrid]
---

# {name}

A [linearize](https://pypi.org/project/linearize/) checkpoint{origin} exported to transformers' own
**GraniteMoeHybrid** architecture (`model_type: granitemoehybrid`): {mamba} of {layers} layers are Mamba-2 layers
converted from attention{f", layers {kept} keep softmax attention" if kept else ""}. The weights are those of the
converted model, laid out as GraniteMoeHybrid's (dense gated MLPs, RoPE, all multipliers 1), so it computes the
same function with no remote code.
{notes}
```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{name}")
tokenizer = AutoTokenizer.from_pretrained("{name}")
```

Engines: transformers runs GraniteMoeHybrid natively (linearize's tests check that exports give the converted
model's logits and greedy tokens there). llama.cpp: its `convert_hf_to_gguf.py` converts this folder to GGUF
(linearize's `benchmarks/llama_cpp_check.py` checks the greedy tokens there). vLLM and SGLang list
GraniteMoeHybrid among their supported models (a claim from their model lists; exports have not been run on them).
"""


def config_json(written, config, rope):
    """vLLM and SGLang look GraniteMoeHybrid's layers up by "mamba" / "attention", as IBM's checkpoints write them
    (transformers maps them to its "linear_attention" / "full_attention"). llama.cpp's converter ignores
    ``position_embedding_type`` and gives a GraniteMoeHybrid with Mamba layers RoPE only when "BambaForCausalLM" is
    among its architectures (Bamba: the same layout, with RoPE); the engines that read architectures take the
    first they know, GraniteMoeHybridForCausalLM."""
    written["layer_types"] = ["mamba" if t == "linear_attention" else "attention" for t in config.layer_types]
    if config.position_embedding_type == "rope":
        written["architectures"] = [*written["architectures"], "BambaForCausalLM"]


register(
    Host(
        target="mamba",
        families=("llama", "mistral", "qwen2"),
        model_type="granitemoehybrid",
        name="GraniteMoeHybrid",
        model_class="GraniteMoeHybridForCausalLM",
        check_layer=check_layer,
        check_base=check_base,
        config=native_config,
        state_dict=native_state_dict,
        card=model_card,
        config_json=config_json,
    )
)
