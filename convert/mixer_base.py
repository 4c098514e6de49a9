"""What every mixer shares: it adopts the replaced attention's projections, records its settings, declares its
cache layer and its paper, and reports its new parameters and its decode-state size; plus the helpers more than one
method uses (padding masks, the short causal convolution, Mamba-style inits, a decode step's projections)."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks
from transformers import initialization as init

from linearize.convert.families import family, head_dim

# The replaced attention's submodules a mixer keeps, under the same names (so base weights load by name).
ADOPTED = ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")
PROJECTIONS = ADOPTED[:4]


SINK_STATE = 1  # a windowed mixer's attention-sink keys/values live in its cache layer's second state


@dataclass(frozen=True)
class Citation:
    """A paper (or release) a method comes from, as data: the model card prints ``short`` and ``bibtex``."""

    title: str
    authors: tuple  # full names, in the paper's order (a team's name as one entry)
    year: int
    venue: str  # the conference, "arXiv" for a preprint, "" for a release without a paper
    url: str

    def short(self):
        """'Zhang et al., "Title", ICLR 2025': the model card's line."""
        names = [a.split()[-1] for a in self.authors] if len(self.authors) > 1 else list(self.authors)
        who = " & ".join(names) if len(names) <= 2 else f"{names[0]} et al."
        return f'{who}, "{self.title}", {self.venue + " " if self.venue else ""}{self.year}'

    def bibtex(self):
        kind, where = (
            ("inproceedings", f"  booktitle = {{{self.venue}}},\n") if self.venue not in ("", "arXiv") else ("misc", "")
        )
        key = f"{self.authors[0].split()[-1].lower()}{self.year}{self.title.split()[0].strip(':').lower()}"
        return (
            f"@{kind}{{{key},\n  title = {{{self.title}}},\n  author = {{{' and '.join(self.authors)}}},\n{where}"
            f"  year = {{{self.year}}},\n  url = {{{self.url}}}\n}}"
        )


def new_token_mask(attention_mask, T):
    """The 2D padding mask's entries for the T new tokens (bool), or None."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2:
        raise ValueError("linearize mixers take the 2D padding mask, not a 4D attention mask")
    return attention_mask[:, -T:].bool()


def zero_where_padding(x, valid):
    """x [B, T, ...] with padded positions set to 0 (filled, not multiplied, so NaNs cannot leak)."""
    if valid is None:
        return x
    return x.masked_fill(~valid.view(*valid.shape, *([1] * (x.dim() - 2))), 0)


def materialize(module, device, dtype=None):
    """Replace ``module``'s own tensors that are on the meta device by tensors on ``device`` of the same shape
    and dtype (floats: ``dtype`` if given), floats filled with NaN and integers with 0 (their values are for an
    init to set)."""
    for store in (module._parameters, module._buffers):
        for name, t in list(store.items()):
            if t is None or not t.is_meta:
                continue
            floating = t.is_floating_point()
            real = torch.full(
                t.shape, float("nan") if floating else 0, device=device, dtype=dtype if floating and dtype else t.dtype
            )
            store[name] = nn.Parameter(real, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else real


def causal_conv(x, weight, bias, cache, layer_idx):
    """Depthwise causal convolution over time of x [B, T, C] with ``weight`` [C, K] (and ``bias`` [C] or None);
    the layer's conv state in the cache holds the last inputs (Mamba's and Gated DeltaNet's short conv)."""
    T, K = x.shape[1], weight.shape[1]
    seq = x.transpose(1, 2)  # [B, C, T]
    if cache is not None:
        seq = cache.update_conv_state(seq, layer_idx, conv_kernel_size=K)
    # conv1d pads both ends and the tail is dropped, as transformers' Mamba-2 and Gated DeltaNet layers do, so
    # exports to them round alike (a one-ulp difference here grows through a model's layers).
    out = F.conv1d(
        seq,
        weight.to(seq.dtype)[:, None],
        None if bias is None else bias.to(seq.dtype),
        padding=K - 1,
        groups=weight.shape[0],
    )
    return out[..., : seq.shape[-1]][..., -T:].transpose(1, 2)


def init_dt_bias(dt_bias, dt_min=1e-3, dt_max=1e-1):
    """dt_bias = softplus^-1(dt) with dt spread geometrically over [dt_min, dt_max] across heads (Mamba's range)."""
    dt = torch.exp(torch.linspace(math.log(dt_min), math.log(dt_max), dt_bias.numel()))
    init.copy_(dt_bias, dt + torch.log(-torch.expm1(-dt)))


def init_A_log(A_log):
    """A = 1 .. 16 spread linearly over the heads, stored as its log (Mamba-2's init)."""
    init.copy_(A_log, torch.log(torch.linspace(1.0, 16.0, A_log.numel())))


def init_identity_conv(weight):
    """A depthwise causal convolution [C, K] that passes its input through: the current token's tap 1, the rest 0."""
    channels, taps = weight.shape
    init.copy_(weight, F.one_hot(torch.full((channels,), taps - 1), taps).float())


def step_rotation(apply_rotary, cos, sin, batch_size):
    """Rotary for a one-token step as one product: M [batch_size, D, D] with ``x @ M`` the family's rotary of x
    [B, heads, D] at each row's position (cos, sin [B or 1, 1, D]). Rotary is linear in x, so M's rows are the
    identity's rows rotated by the family's own function. The model makes it once per step for all its mixers: a
    decode step's time is its op count, and rotary's halves, negation, concatenation, products and sum are about ten
    ops per tensor."""
    D = cos.shape[-1]
    eye = torch.eye(D, dtype=cos.dtype, device=cos.device).expand(cos.shape[0], 1, D, D)
    return apply_rotary(eye, eye[:, :, :1], cos, sin, unsqueeze_dim=2)[0][:, 0].expand(batch_size, D, D)


def project_step(x, weight, weight_t, bias):
    """``nn.Linear``'s product for a 2D input x, from the weight's kept transposed view (``step_projections``)."""
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


def plain_linear(module):
    """Whether calling ``module`` is exactly ``nn.Linear``'s product: a plain ``nn.Linear`` with its class's forward,
    no forward hooks of its own or global ones, and weights off the meta device. PyTorch has no public query for
    registered hooks, so the hook tables are read here, in this one place."""
    return (
        type(module) is nn.Linear
        and "forward" not in vars(module)
        and module.weight.device.type != "meta"
        and not (
            module._forward_hooks or module._forward_pre_hooks or _global_forward_hooks or _global_forward_pre_hooks
        )
    )


@dataclass(frozen=True)
class Packing:
    """Sequences packed into rows with restarting ``position_ids`` (what ``DataCollatorWithFlattening`` and TRL's
    padding-free batches make), laid out one sequence per row, right-padded, for the mixers: each sequence then gets
    its own window, sinks, convolution and state, whatever the form, and nothing reaches back across a boundary.
    ``rows`` and ``offsets`` [B * T] place each packed token; ``valid`` [N, L] marks real tokens; ``position_ids``
    [N, L] continue each sequence's positions over its padding."""

    rows: torch.Tensor
    offsets: torch.Tensor
    valid: torch.Tensor
    position_ids: torch.Tensor

    @classmethod
    def from_positions(cls, sequence_index, position_ids):
        """From transformers' ``find_packed_sequence_indices`` (the sequence of each token [B, T]) and the
        position ids [B or 1, T]."""
        B, T = sequence_index.shape
        starts = F.pad(sequence_index[:, 1:] != sequence_index[:, :-1], (1, 0), value=True).flatten()
        rows = starts.cumsum(0) - 1
        first = starts.nonzero().squeeze(1)  # the flat index of each sequence's first token
        offsets = torch.arange(B * T, device=rows.device) - first[rows]
        lengths = torch.bincount(rows, minlength=len(first))
        steps = torch.arange(int(lengths.max()), device=rows.device)
        start_positions = position_ids.expand(B, T).flatten()[first]
        return cls(rows, offsets, steps < lengths[:, None], start_positions[:, None] + steps)

    def unpack(self, x):
        """x [B, T, *] -> [N, L, *], padding zero (differentiable)."""
        out = x.new_zeros(self.valid.shape + x.shape[2:])
        return out.index_put((self.rows, self.offsets), x.flatten(0, 1))

    def repack(self, y, like):
        """y [N, L, *] -> the packed layout of ``like`` [B, T, *]."""
        return y[self.rows, self.offsets].view(*like.shape[:2], *y.shape[2:])


class Mixer(nn.Module):
    """Base of all mixers: q/k/v/o (and Qwen3's q/k norms) are the family attention's own modules.

    A method's module sets ``target`` (its name), ``citations`` (its papers, as ``Citation``) and ``cache_layer``
    (the transformers cache layer type its state needs: ``linear_attention``, ``hybrid_sliding`` for a recurrent
    state plus a sliding window, ``hybrid`` for a recurrent state plus a growing KV cache), refined per instance by
    ``cache_layout`` where a setting changes it."""

    target = None
    citations = ()
    cache_layer = "linear_attention"

    def __init__(self, config, layer_idx, mode="auto"):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = head_dim(config)
        self.mode = mode  # 'auto', or a form ('naive', 'chunk', 'recurrent', 'fla') for tests and benchmarks
        fam = family(config.model_type)
        self.apply_rotary = fam.apply_rotary
        # The family's own attention module fixes the projections' shapes and biases (Qwen2 biases
        # q/k/v only) and Qwen3's per-head q/k norms; the mixer adopts those submodules.
        template = fam.attention(config, layer_idx)
        for name in ADOPTED:
            setattr(self, name, getattr(template, name, None))

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, packing=None, **kwargs):
        """The attention module's call: ``mix`` over the tokens, or over each packed sequence on a row of its own
        (``packing``, which the model makes once per forward where a row holds several sequences)."""
        if packing is None:
            return self.mix(hidden_states, position_embeddings, attention_mask, cache, **kwargs)
        B = hidden_states.shape[0]
        cos, sin = (packing.unpack(x.expand(B, *x.shape[1:])) for x in position_embeddings)
        kwargs["position_ids"] = packing.position_ids
        out, weights = self.mix(packing.unpack(hidden_states), (cos, sin), packing.valid.long(), None, **kwargs)
        return packing.repack(out, hidden_states), weights

    def mix(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        """The layer over hidden_states [B, T, hidden]: (output [B, T, hidden], None). ``attention_mask`` is the 2D
        padding mask over all tokens so far (1 = real token) or None."""
        raise NotImplementedError

    @classmethod
    def from_attention(cls, attention, config, layer_idx, **settings):
        """Build the mixer around an attention module's own projections (weights shared, not copied).

        The mixer is built on the meta device, so no projections are allocated only to be replaced; its new
        parameters then get memory on the CPU, in the default dtype, and their init (``init_new_parameters``,
        drawing from torch's global generator)."""
        with torch.device("meta"):
            mixer = cls(config, layer_idx, **settings)
        for name in ADOPTED:
            if getattr(attention, name, None) is not None:
                setattr(mixer, name, getattr(attention, name))
            elif getattr(mixer, name, None) is not None:
                raise ValueError(f"{type(attention).__name__} has no {name} for a {cls.target} mixer to adopt")
        mixer.materialize_new_parameters()
        mixer.init_new_parameters()
        return mixer

    def new_modules(self):
        """This mixer and its submodules that hold its new parameters (the adopted modules left out), children
        before parents: the order in which transformers' ``initialize_weights`` visits modules."""

        def walk(module, top):
            for name, child in module.named_children():
                if not (top and name in ADOPTED):
                    yield from walk(child, False)
            yield module

        return list(walk(self, True))

    def materialize_new_parameters(self, device="cpu", dtype=None):
        """Give the new parameters and buffers that are on the meta device memory on ``device`` (floats in
        ``dtype`` if given), filled with NaN (integers: 0) until ``init_new_parameters`` sets them, so a
        parameter no init covers cannot pass unseen."""
        for module in self.new_modules():
            materialize(module, device, dtype=dtype)

    @torch.no_grad()
    def init_new_parameters(self, init_on=None):
        """Initialise every parameter the conversion adds: each new module's ``reset_linearize_parameters``,
        children first. The adopted q/k/v/o are not touched.

        init_on: a device on which the new floating tensors are initialised in the default dtype and then
        copied into place (cast to theirs): the values an init there followed by a cast would give, with only
        this mixer's new parameters in the default dtype as scratch."""
        scratch = []
        if init_on is not None:
            for module in self.new_modules():
                for store in (module._parameters, module._buffers):
                    for name, t in store.items():
                        if t is not None and t.is_floating_point():
                            tmp = torch.full(t.shape, float("nan"), dtype=torch.get_default_dtype(), device=init_on)
                            if isinstance(t, nn.Parameter):
                                tmp = nn.Parameter(tmp, requires_grad=t.requires_grad)
                            store[name] = tmp
                            scratch.append((store, name, t))
        for module in self.new_modules():
            if hasattr(module, "reset_linearize_parameters"):
                module.reset_linearize_parameters()
        for store, name, t in scratch:
            t.copy_(store[name])
            store[name] = t

    def settings(self):
        """What the checkpoint's config records to rebuild this mixer (``target`` plus options)."""
        return {"target": self.target}

    def cache_layout(self):
        """(this layer's cache layer type, its per-layer cache config such as ``sliding_window``): what the model
        records in its config's ``layer_types`` and ``per_layer_config``, from which transformers builds the cache."""
        return self.cache_layer, {}

    def new_parameter_names(self):
        """Names (relative to this module) of the parameters the conversion added."""
        return [n for n, _ in self.named_parameters() if n.split(".")[0] not in ADOPTED]

    def reset_linearize_parameters(self):
        """Initialise the parameters the conversion adds (transformers' init must not touch q/k/v/o)."""

    def state_bytes(self, batch_size=1, seq_len=0):
        """Bytes of this layer's decode state after ``seq_len`` tokens."""
        raise NotImplementedError

    def step_projections(self):
        """For the decode steps of one cache (``kept_for_steps`` keeps it): q, k, v, o as (weight, its transposed
        view, bias) where all four are plain ``nn.Linear`` without forward hooks or a replaced ``forward``, else
        None (LoRA layers, quantised linears, ZeRO-3's hooks, accelerate's offloading, which swaps ``forward`` and
        keeps weights on the meta device until it runs: the modules' own call). A projection is then one ``mm``
        (``addmm`` with a bias), the product ``nn.Linear`` computes, without the transpose it dispatches on every
        call nor the module call: a decode step's time is its op count and its Python. The views cost no memory."""
        linears = [getattr(self, name) for name in PROJECTIONS]
        if not all(plain_linear(m) for m in linears):
            return None
        return tuple((m.weight, m.weight.detach().t(), m.bias) for m in linears)

    def project_qkv(self, x, linears=None):
        """q, k, v projections of x [N, hidden], by ``step_projections``' kept views where given."""
        if linears is None:
            return self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return tuple(project_step(x, *linear) for linear in linears[:3])

    def project_o(self, o, linears=None):
        """The output projection of o [N, H * D], by ``step_projections``' kept view where given."""
        return self.o_proj(o) if linears is None else project_step(o, *linears[3])

    def qkv(self, hidden_states, linears=None):
        """q [B, T, H, D], k and v [B, T, Hkv, D], after Qwen3's q/k norms where present (``linears``: a decode
        step's ``step_projections``)."""
        B, T, _ = hidden_states.shape
        x = hidden_states.reshape(B * T, -1)  # 2D: a projection of a 3D input costs two more views (decode counts ops)
        q, k, v = self.project_qkv(x, linears)
        q = q.view(B, T, self.num_heads, self.head_dim)
        k = k.view(B, T, self.num_kv_heads, self.head_dim)
        v = v.view(B, T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    def step_qkv(self, hidden_states, position_embeddings, rotation=None, linears=None):
        """A one-token step's q [B, H, D] and k, v head-major [B, Hkv, 1, D] (as the window cache holds them), after
        Qwen3's q/k norms and rotary. Each tensor is viewed once, in the layout its next product reads, and with the
        model's ``step_rotation`` rotary is one product per tensor (a decode step's time is its op count)."""
        B, D = hidden_states.shape[0], self.head_dim
        q, k, v = self.project_qkv(hidden_states.reshape(B, -1), linears)
        q = q.view(B, self.num_heads, D)
        k = k.view(B, self.num_kv_heads, D)
        v = v.view(B, self.num_kv_heads, 1, D)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rotation is None:
            q, k = self.apply_rotary(q[:, None], k[:, None], *position_embeddings, unsqueeze_dim=2)
            return q[:, 0], k.transpose(1, 2), v
        return torch.bmm(q, rotation), torch.bmm(k, rotation).view(B, -1, 1, D), v

    def rotate(self, q, k, position_embeddings, rotation=None):
        """Rotary on q and k [B, T, heads, D]; a one-token step with the model's ``step_rotation``
        (``rotation``) takes one product per tensor instead of rotary's ten ops."""
        if rotation is None or q.shape[1] != 1:
            return self.apply_rotary(q, k, *position_embeddings, unsqueeze_dim=2)
        B, D = q.shape[0], q.shape[-1]
        return tuple(torch.bmm(x.reshape(B, -1, D), rotation).view(x.shape) for x in (q, k))

    def repeat_kv(self, *xs):
        """Repeat KV-head tensors [B, T, Hkv, *] to the query heads (GQA)."""
        groups = self.num_heads // self.num_kv_heads
        if groups == 1:
            return xs
        # expand + reshape, as transformers' repeat_kv: one copy (repeat_interleave costs several ops more)
        return tuple(
            x[:, :, :, None].expand(*x.shape[:3], groups, x.shape[3]).reshape(*x.shape[:2], -1, x.shape[3]) for x in xs
        )
