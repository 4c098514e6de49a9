"""Native export: a converted model written as an architecture transformers ships, so it loads with plain
``AutoModelForCausalLM.from_pretrained(folder)``, no remote code, and serving engines that register the
architecture can run it. Two pairs map exactly (same function, not an approximation); others are refused.

``mamba`` on a Llama, Mistral or Qwen2 base -> GraniteMoeHybrid (``model_type: granitemoehybrid``):

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
- embedding, residual and logits multipliers 1.

``gdn`` on a Qwen3 base -> Qwen3-Next (``model_type: qwen3_next``):

- ``layer_types`` "linear_attention" (converted) / "full_attention" (kept); dense MLPs in every layer
  (``mlp_only_layers`` = all, ``num_experts`` 0, ``intermediate_size`` the base's), gate/up/down as they are;
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

Both hosts (transformers 5.x) cannot run with a cache when no layer is attention, so an all-converted export
gets one pass-through attention layer, last (see ``_granite_config``).
"""

import json
import os
from pathlib import Path

import torch

from linearize.convert.configuration_linearized import LinearizedConfig
from linearize.convert.families import base_layer_types, head_dim
from linearize.convert.save import atomic_folder
from linearize.errors import LinearizeError

PAIRS = {"mamba": ("llama", "mistral", "qwen2"), "gdn": ("qwen3",)}  # target -> base families it exports from
HOSTS = {"mamba": "GraniteMoeHybrid", "gdn": "Qwen3-Next"}
SUPPORTED = ("native export supports target 'mamba' on llama, mistral or qwen2 bases (as GraniteMoeHybrid) and "
             "target 'gdn' on qwen3 bases (as Qwen3-Next): every converted layer that mixer, the others softmax "
             "attention")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class ExportError(LinearizeError):
    """A model that cannot be written natively; the message is the one line the CLI prints."""


def _load(model_or_dir):
    """(converted model, source folder or None)."""
    if not isinstance(model_or_dir, (str, os.PathLike)):
        return model_or_dir, None
    folder = Path(model_or_dir).expanduser()
    config = folder / "config.json"
    if not config.is_file():
        raise ExportError(f"{str(model_or_dir)!r} is not a converted checkpoint folder (no config.json)")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type != "linearized":
        raise ExportError(f"{str(model_or_dir)!r} is a {model_type!r} model, not a linearize checkpoint; {SUPPORTED}")
    check_exportable(json.loads(config.read_text()))  # refuse before loading any weights
    from linearize.convert.auto import LinearizedForCausalLM

    return LinearizedForCausalLM.from_pretrained(folder, dtype="auto").eval(), folder


def check_exportable(config):
    """Raise ExportError (one line naming what is supported) unless ``config`` (a LinearizedConfig, or the
    dict of its config.json) maps exactly onto a host architecture; return the target whose host it maps
    onto ("mamba": GraniteMoeHybrid, "gdn": Qwen3-Next; a model that kept every layer goes to its family's)."""
    if isinstance(config, dict):
        config = LinearizedConfig.from_dict(config)
    family = config.base_config.get("model_type")
    if not any(family in families for families in PAIRS.values()):
        raise ExportError(f"cannot export a {family!r} base: {SUPPORTED}")
    mixers = config.mixers
    targets = sorted({m["target"] for m in mixers if m})
    if len(targets) > 1 or (targets and targets[0] not in PAIRS):
        raise ExportError(f"cannot export target{'s' if len(targets) > 1 else ''} {', '.join(map(repr, targets))}: "
                          f"{SUPPORTED}")
    target = targets[0] if targets else next(t for t, families in PAIRS.items() if family in families)
    if family not in PAIRS[target]:
        raise ExportError(f"cannot export target {target!r} on a {family!r} base: {SUPPORTED}")
    base = config.get_base_config()
    host = HOSTS[target]
    for i, m in enumerate(mixers):
        if not m:
            continue
        if target == "mamba" and (not m.get("conv_kernel", 4) or not m.get("gate", True)):
            raise ExportError(f"layer {i}: a mamba mixer without its convolution or gated norm (conv_kernel="
                              f"{m.get('conv_kernel', 4)}, gate={m.get('gate', True)}) has no GraniteMoeHybrid form; "
                              "export supports the default mamba mixer (conv_kernel >= 1, gate on)")
        if target == "gdn" and (not m.get("conv_kernel", 4) or not m.get("gate", True)):
            raise ExportError(f"layer {i}: a gdn mixer without its convolution or output gate (conv_kernel="
                              f"{m.get('conv_kernel', 4)}, gate={m.get('gate', True)}) has no Qwen3-Next form; "
                              "export supports the default gdn mixer (conv_kernel >= 1, gate on)")
        if m.get("norm_eps") is not None and float(m["norm_eps"]) != float(base.rms_norm_eps):
            raise ExportError(f"layer {i}: the {target} output norm's epsilon {m['norm_eps']} differs from "
                              f"rms_norm_eps {base.rms_norm_eps}, which {host} uses for both; export needs them equal")
    kernels = {m.get("conv_kernel", 4) for m in mixers if m}
    if len(kernels) > 1:
        raise ExportError(f"{target} layers with different conv_kernel sizes {sorted(kernels)}: {host} has one "
                          "convolution size; export supports one size")
    if getattr(base, "hidden_act", "silu") != "silu":
        raise ExportError(f"hidden_act {base.hidden_act!r}: {host}'s convolution uses the model's activation, and "
                          f"the {target} mixer's is SiLU, so export supports 'silu' only")
    if target == "mamba":
        heads, dim, hidden = base.num_attention_heads, head_dim(base), base.hidden_size
        if heads * dim != hidden:
            raise ExportError(f"heads x head_dim = {heads} x {dim} = {heads * dim} differs from hidden_size {hidden}; "
                              "GraniteMoeHybrid (as transformers and vLLM build it) needs them equal")
        if getattr(base, "mlp_bias", False):
            raise ExportError("mlp_bias=True: GraniteMoeHybrid's MLP has no biases; export supports bias-free MLPs")
    elif getattr(base, "attention_bias", False):
        raise ExportError("attention_bias=True: Qwen3-Next's Gated DeltaNet projections have no biases; export "
                          "supports Qwen3 bases without attention biases")
    types = base_layer_types(base)
    sliding = [i for i, m in enumerate(mixers) if not m and types[i] != "full_attention"]
    if sliding:
        raise ExportError(f"kept attention layer{'s' if len(sliding) > 1 else ''} {sliding} use"
                          f"{'' if len(sliding) > 1 else 's'} a sliding window; {host}'s attention is full, "
                          "so export supports kept layers with full attention only (convert those layers too, or use "
                          "a base without sliding windows)")
    return target


def native_config(model):
    """The host architecture's config for a converted model (GraniteMoeHybrid or Qwen3-Next)."""
    target = check_exportable(model.config)
    return _granite_config(model) if target == "mamba" else _qwen3_next_config(model)


def native_state_dict(model, config):
    """The converted model's tensors under the host's names and layout."""
    if config.model_type == "qwen3_next":
        return _qwen3_next_state_dict(model, config)
    return _granite_state_dict(model, config)


def _granite_config(model):
    """The GraniteMoeHybridConfig of a converted model.

    Pass-through layer: transformers' GraniteMoeHybrid (5.x) cannot run with a cache when no layer is attention
    (its mask code asks the cache for a length that only attention layers keep). An all-Mamba export therefore
    gets one more layer, last: attention whose projections and MLP are zero, so it adds exactly 0 to the
    residual stream (the function is unchanged), and whose KV cache (one layer's worth, of zeros) gives the
    cache its length."""
    from transformers import GraniteMoeHybridConfig

    base = model.config.get_base_config()
    H, Hkv, D = base.num_attention_heads, base.num_key_value_heads, head_dim(base)
    mixers = model.config.mixers
    kernel = next((m.get("conv_kernel", 4) for m in mixers if m), 4)
    bias = any(getattr(model.model.layers[i].self_attn, n).bias is not None
               for i in range(base.num_hidden_layers) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    out_bias = any(model.model.layers[i].self_attn.o_proj.bias is not None for i, m in enumerate(mixers) if m)
    config = GraniteMoeHybridConfig(
        vocab_size=base.vocab_size, hidden_size=base.hidden_size, intermediate_size=base.intermediate_size,
        shared_intermediate_size=base.intermediate_size, num_local_experts=0,
        num_hidden_layers=base.num_hidden_layers + all(mixers), num_attention_heads=H, num_key_value_heads=Hkv,
        hidden_act="silu", max_position_embeddings=base.max_position_embeddings,
        initializer_range=base.initializer_range, rms_norm_eps=base.rms_norm_eps,
        pad_token_id=base.pad_token_id, bos_token_id=base.bos_token_id, eos_token_id=base.eos_token_id,
        tie_word_embeddings=bool(base.tie_word_embeddings), rope_parameters=dict(base.rope_parameters),
        attention_bias=bias, attention_dropout=float(getattr(base, "attention_dropout", 0.0) or 0.0),
        embedding_multiplier=1.0, logits_scaling=1.0, residual_multiplier=1.0, attention_multiplier=D ** -0.5,
        position_embedding_type="rope",
        layer_types=["linear_attention" if m else "full_attention" for m in mixers] + (
            ["full_attention"] if all(mixers) else []),  # the pass-through layer
        mamba_n_heads=H, mamba_n_groups=H, mamba_d_state=D, mamba_d_head=D, mamba_d_conv=kernel,
        mamba_expand=1, mamba_conv_bias=True, mamba_proj_bias=out_bias,
    )
    config.architectures = ["GraniteMoeHybridForCausalLM"]
    config.dtype = model.dtype
    return config


def _per_head(t, heads, groups):
    """Rows [heads * D, ...] of KV heads repeated to ``heads * groups`` query heads (GQA)."""
    return t.reshape(heads, -1, *t.shape[1:]).repeat_interleave(groups, 0).reshape(-1, *t.shape[1:])


def _granite_state_dict(model, config):
    """The converted model's tensors under GraniteMoeHybrid's names and layout."""
    base = model.model.base_config
    H, Hkv, D = base.num_attention_heads, base.num_key_value_heads, head_dim(base)
    G = H // Hkv
    sd = {"model.embed_tokens.weight": model.model.embed_tokens.weight, "model.norm.weight": model.model.norm.weight}
    if not config.tie_word_embeddings:
        sd["lm_head.weight"] = model.lm_head.weight

    like = model.model.embed_tokens.weight

    def zeros(*shape):
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    def bias(linear):
        return linear.bias if linear.bias is not None else zeros(linear.out_features)

    if len(config.layer_types) > len(model.model.layers):  # the pass-through layer (native_config), last
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
        sd[m + "in_proj.weight"] = torch.cat([attn.z_proj.weight, _per_head(attn.v_proj.weight, Hkv, G),
                                              _per_head(attn.k_proj.weight, Hkv, G), attn.q_proj.weight,
                                              attn.dt_proj.weight])
        if config.mamba_proj_bias:  # for o_proj's bias; the q/k/v biases are in the conv's bias
            sd[m + "in_proj.bias"] = zeros(sd[m + "in_proj.weight"].shape[0])
            sd[m + "out_proj.bias"] = bias(attn.o_proj)
        C, B, x = torch.split(attn.conv_weight, [H * D, Hkv * D, Hkv * D])
        sd[m + "conv1d.weight"] = torch.cat([_per_head(x, Hkv, G), _per_head(B, Hkv, G), C])[:, None]
        with torch.no_grad():  # the bias our mixer's convolution adds, q/k/v biases included
            conv_bias = attn.relative_to_zero_state(zeros(1, 1, attn.conv_channels))[1].to(like.dtype)
        C, B, x = torch.split(conv_bias, [H * D, Hkv * D, Hkv * D])
        sd[m + "conv1d.bias"] = torch.cat([_per_head(x, Hkv, G), _per_head(B, Hkv, G), C])
        sd[m + "dt_bias"], sd[m + "A_log"], sd[m + "D"] = attn.dt_bias, attn.A_log, attn.D
        sd[m + "norm.weight"] = attn.norm_weight
        sd[m + "out_proj.weight"] = attn.o_proj.weight
    return {k: v.detach().contiguous() for k, v in sd.items()}


def _qwen3_next_config(model):
    """The Qwen3NextConfig of a gdn model on a Qwen3 base: dense MLPs everywhere, full rotary, the linear layers'
    heads and head size those of the base's attention. An all-gdn export gets a pass-through attention layer
    (zero projections and MLP), last, as ``_granite_config`` explains: transformers' Qwen3-Next, too, cannot
    run with a cache when no layer is attention."""
    from transformers import Qwen3NextConfig

    base = model.config.get_base_config()
    H, Hkv, D = base.num_attention_heads, base.num_key_value_heads, head_dim(base)
    mixers = model.config.mixers
    kernel = next((m.get("conv_kernel", 4) for m in mixers if m), 4)
    layer_types = ["linear_attention" if m else "full_attention" for m in mixers] + (
        ["full_attention"] if all(mixers) else [])  # the pass-through layer
    rope = {**base.rope_parameters, "partial_rotary_factor": 1.0}
    config = Qwen3NextConfig(
        vocab_size=base.vocab_size, hidden_size=base.hidden_size, intermediate_size=base.intermediate_size,
        num_hidden_layers=len(layer_types), num_attention_heads=H, num_key_value_heads=Hkv, head_dim=D,
        hidden_act="silu", max_position_embeddings=base.max_position_embeddings,
        initializer_range=base.initializer_range, rms_norm_eps=base.rms_norm_eps,
        pad_token_id=base.pad_token_id, bos_token_id=base.bos_token_id, eos_token_id=base.eos_token_id,
        tie_word_embeddings=bool(base.tie_word_embeddings), rope_parameters=rope, partial_rotary_factor=1.0,
        attention_bias=False, attention_dropout=float(getattr(base, "attention_dropout", 0.0) or 0.0),
        linear_conv_kernel_dim=kernel, linear_key_head_dim=D, linear_value_head_dim=D, linear_num_key_heads=H,
        linear_num_value_heads=H, num_experts=0, mlp_only_layers=list(range(len(layer_types))),
        layer_types=layer_types,
    )
    config.architectures = ["Qwen3NextForCausalLM"]
    config.dtype = model.dtype
    return config


def _centred(w):
    """A norm weight for the host's zero-centred RMSNorm, which multiplies by (1 + w): w - 1 (in fp32)."""
    return (w.float() - 1).to(w.dtype)


def _qwen3_next_state_dict(model, config):
    """The converted model's tensors under Qwen3-Next's names and layout (see the module docstring)."""
    base = model.model.base_config
    H, Hkv, D = base.num_attention_heads, base.num_key_value_heads, head_dim(base)
    G, hidden = H // Hkv, base.hidden_size
    sd = {"model.embed_tokens.weight": model.model.embed_tokens.weight,
          "model.norm.weight": _centred(model.model.norm.weight)}
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

    if len(config.layer_types) > len(model.model.layers):  # the pass-through layer, last
        p, inner = f"model.layers.{len(model.model.layers)}.", base.intermediate_size
        for n, shape in (("input_layernorm", (hidden,)), ("post_attention_layernorm", (hidden,)),
                         ("self_attn.q_norm", (D,)), ("self_attn.k_norm", (D,)),
                         ("self_attn.q_proj", (2 * H * D, hidden)), ("self_attn.k_proj", (Hkv * D, hidden)),
                         ("self_attn.v_proj", (Hkv * D, hidden)), ("self_attn.o_proj", (hidden, H * D)),
                         ("mlp.gate_proj", (inner, hidden)), ("mlp.up_proj", (inner, hidden)),
                         ("mlp.down_proj", (hidden, inner))):
            sd[p + n + ".weight"] = zeros(*shape)
    for i, layer in enumerate(model.model.layers):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = _centred(layer.input_layernorm.weight)
        sd[p + "post_attention_layernorm.weight"] = _centred(layer.post_attention_layernorm.weight)
        for n in ("gate_proj", "up_proj", "down_proj"):
            sd[p + f"mlp.{n}.weight"] = getattr(layer.mlp, n).weight
        attn = layer.self_attn
        if config.layer_types[i] == "full_attention":
            a = p + "self_attn."
            q = attn.q_proj.weight.view(H, D, hidden)
            sd[a + "q_proj.weight"] = torch.stack([q, torch.zeros_like(q)], 1).reshape(2 * H * D, hidden)  # [q; gate]
            sd[a + "k_proj.weight"], sd[a + "v_proj.weight"] = attn.k_proj.weight, attn.v_proj.weight
            sd[a + "o_proj.weight"] = attn.o_proj.weight * 2  # undoes sigmoid(0) = 0.5
            sd[a + "q_norm.weight"], sd[a + "k_norm.weight"] = _centred(attn.q_norm.weight), _centred(attn.k_norm.weight)
            continue
        m = p + "linear_attn."
        q, k = scaled(attn.q_proj, attn.q_norm, H), scaled(attn.k_proj, attn.k_norm, Hkv).repeat_interleave(G, 0)
        v = attn.v_proj.weight.view(Hkv, D, hidden).repeat_interleave(G, 0)
        z = attn.z_proj.weight.view(H, D, hidden)
        sd[m + "in_proj_qkvz.weight"] = torch.stack([q, k, v, z], 1).reshape(4 * H * D, hidden)
        sd[m + "in_proj_ba.weight"] = torch.stack([attn.b_proj.weight, attn.a_proj.weight], 1).reshape(2 * H, hidden)
        cq, ck, cv = torch.split(attn.conv_weight, [H * D, Hkv * D, Hkv * D])
        sd[m + "conv1d.weight"] = torch.cat([cq, _per_head(ck, Hkv, G), _per_head(cv, Hkv, G)])[:, None]
        sd[m + "dt_bias"], sd[m + "A_log"] = attn.dt_bias, attn.A_log
        sd[m + "norm.weight"] = attn.norm_weight
        sd[m + "out_proj.weight"] = attn.o_proj.weight
    return {k: v.detach().contiguous() for k, v in sd.items()}


HOST_CLASSES = {"granitemoehybrid": "GraniteMoeHybridForCausalLM", "qwen3_next": "Qwen3NextForCausalLM"}
HOST_NAMES = {"granitemoehybrid": "GraniteMoeHybrid", "qwen3_next": "Qwen3-Next"}


def native_model(model):
    """A host model (GraniteMoeHybridForCausalLM or Qwen3NextForCausalLM) computing what ``model`` computes."""
    import transformers

    config = native_config(model)
    host = HOST_NAMES[config.model_type]
    with torch.device("meta"):
        native = getattr(transformers, HOST_CLASSES[config.model_type])(config)
    sd = native_state_dict(model, config)
    missing, unexpected = native.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"weights did not map onto {host}: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        native.tie_weights()
    # The rotary frequencies are a computed (non-persistent) buffer: build them for real.
    native.model.rotary_emb = type(native.model.rotary_emb)(config).to(model.device)
    meta = [n for n, t in [*native.named_parameters(), *native.named_buffers()] if t.is_meta]
    if meta:
        raise RuntimeError(f"{host} tensors left unset: {meta[:5]}")
    return native.eval()


def model_card(config, source, layers, name="PATH"):
    """A short README.md: what the folder is and which engines run it (``layers``: the converted model's)."""
    if config.model_type == "qwen3_next":
        return _qwen3_next_card(config, source, layers, name)
    kinds = config.layer_types[:layers]
    mamba = sum(t == "linear_attention" for t in kinds)
    kept = [i for i, t in enumerate(kinds) if t != "linear_attention"]
    origin = f" from `{source}`" if source else ""
    notes = []
    if len(config.layer_types) > layers:
        notes.append(f"Layer {layers} is a pass-through attention layer (zero output and MLP projections: it adds "
                     "exactly 0), added because transformers' GraniteMoeHybrid cannot run with a cache when no "
                     "layer is attention; it keeps one layer's KV cache (of zeros).")
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
model's logits and greedy tokens there). vLLM and SGLang list GraniteMoeHybrid among their supported models (a
claim from their model lists; exports have not been run on them).
"""


def _qwen3_next_card(config, source, layers, name):
    kinds = config.layer_types[:layers]
    linear = sum(t == "linear_attention" for t in kinds)
    kept = [i for i, t in enumerate(kinds) if t != "linear_attention"]
    origin = f" from `{source}`" if source else ""
    note = ""
    if len(config.layer_types) > layers:
        note = (f"\nLayer {layers} is a pass-through attention layer (zero projections and MLP: it adds exactly 0), "
                "added because transformers' Qwen3-Next cannot run with a cache when no layer is attention; it keeps "
                "one layer's KV cache (of zeros).\n")
    return f"""---
library_name: transformers
tags: [linearize, gated-deltanet, hybrid, qwen3_next]
---

# {name}

A [linearize](https://pypi.org/project/linearize/) checkpoint{origin} exported to transformers' own
**Qwen3-Next** architecture (`model_type: qwen3_next`): {linear} of {layers} layers are Gated DeltaNet layers
converted from attention{f", layers {kept} keep softmax attention" if kept else ""}. The weights are those of the
converted model, laid out as Qwen3-Next's (dense MLPs in every layer, no experts; full rotary; zero-centred
norms stored as weight - 1; the attention's output gate fixed at 0.5 by zero gate weights, with o_proj doubled),
so it computes the same function with no remote code.
{note}
```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{name}")
tokenizer = AutoTokenizer.from_pretrained("{name}")
```

Engines: transformers runs Qwen3-Next natively (linearize's tests check that exports give the converted model's
logits and greedy tokens there). vLLM and SGLang list Qwen3-Next, but read, not run: vLLM's implementation
expects at least one mixture-of-experts layer, and this model has none, so it is not expected to load there.
"""


def export_native(model_or_dir, out, tokenizer=None):
    """Write ``model_or_dir`` (a converted model, or its checkpoint folder) to ``out`` as the architecture
    transformers ships for it (GraniteMoeHybrid for mamba, Qwen3-Next for gdn on Qwen3, see the module docstring):
    safetensors, config, generation config, the tokenizer (``tokenizer``, or the source folder's) and a
    README.md. Atomic: written to a temporary sibling folder, renamed into place when complete. Raises
    ExportError (one line) for models that do not map exactly. Returns ``out`` as a Path."""
    from transformers import AutoTokenizer, GenerationConfig

    model, folder = _load(model_or_dir)
    native = native_model(model)
    if tokenizer is None and folder is not None and any((folder / f).exists() for f in TOKENIZER_FILES):
        tokenizer = AutoTokenizer.from_pretrained(folder)
    if folder is not None and (folder / "generation_config.json").exists():
        generation = GenerationConfig.from_pretrained(folder)
    else:
        generation = getattr(model, "generation_config", None) or GenerationConfig.from_model_config(native.config)
    out = Path(out)
    with atomic_folder(out) as tmp:
        native.generation_config = generation
        native.save_pretrained(tmp)
        # As the hosts' own checkpoints write them, for engines that read these fields (SGLang's config reads
        # rope_theta / rope_scaling; for GraniteMoeHybrid, vLLM and SGLang look layers up by "mamba" /
        # "attention"; Qwen's Qwen3-Next config.json has partial_rotary_factor at the top): transformers maps the
        # layer names to its "linear_attention" / "full_attention" and the rope fields to rope_parameters.
        path = tmp / "config.json"
        written = json.loads(path.read_text())
        rope = dict(native.config.rope_parameters)
        if native.config.model_type == "granitemoehybrid":
            written["layer_types"] = ["mamba" if t == "linear_attention" else "attention"
                                      for t in native.config.layer_types]
        else:
            written["partial_rotary_factor"] = rope.pop("partial_rotary_factor")
        written["rope_theta"] = rope.pop("rope_theta")
        written["rope_scaling"] = rope if rope.get("rope_type", "default") != "default" else None
        path.write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(native.config, folder or model.config.linearize.get("base"),
                                                          len(model.model.layers), out.name))
    return out
