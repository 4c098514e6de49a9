"""Linear attention with a feature map over the replaced attention's q/k/v/o, optionally with a softmax window (and
attention sinks) and a learned decay: the shared layer that linear (elu), T2R, Hedgehog, LoLCATs and SUPRA preset.

Its state lives in transformers' cache (``convert.state_cache``): the linear state as the layer's recurrent state,
and for a window the window's keys and values in the same layer (``hybrid_sliding``). ``forward`` dispatches once:
a one-token step after a cache takes ``decode_step``; everything else (prefill, training, the kernels' reference
forms) takes ``torch_forward``.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from linearize.convert.mixer_base import SINK_STATE, new_token_mask, zero_where_padding
from linearize.convert.state_cache import get_state, kept_for_steps, set_state, update_window
from linearize.convert.window import WindowedMixer
from linearize.errors import SettingError
from linearize.kernels.linear_attn.dispatch import linear_attn, normalized_linear_attn
from linearize.kernels.window_attn.dispatch import step_decays, window_attn, window_attn_step, with_ones
from linearize.kernels.window_attn.sparse import FIRST, SELECTIONS, sparse_window_attn

# A sparse cache's carry in the layer's cache (``kernels/window_attn/sparse.py``), beside the linear state (0) and the
# sink store (``SINK_STATE``): the selection's time and the next position, and the exact keys.
SPARSE_META, SPARSE_ENTRIES = 2, 3
SPARSE_CHUNK = 64  # positions between two selections (tests set fewer, through ``sparse_chunk``)
SPARSE_SELECT = "mean"  # what a new cache keeps by default: the keys that received the most attention per query that
# saw them (benchmarks/smollm2/recall-grid: better than the summed share on every recall cell, which favours the keys
# already cached; the error did not find the passkey); convert and set_sparse_cache write it into the layer's
# settings, so a saved model keeps its own
RECORDLESS_SELECT = "attention"  # a config with a cache and no selection: saved before the choice was recorded


# Feature maps act per head on [batch, time, heads, head_dim]; learned ones start at the identity, so a freshly
# converted layer is a sensible linearisation of the softmax attention it replaces (attention transfer trains them).
def identity_like(weight):
    """Identity matrices (rectangular where feature_dim != head_dim) shaped like ``weight`` [..., D, F]."""
    eye = torch.eye(weight.shape[-2], weight.shape[-1], dtype=weight.dtype, device=weight.device)
    return eye.expand_as(weight)


def per_head(x, weight):
    """x [B, T, H, D] times each head's own weight [H, D, F]: [B, T, H, F] (a batched matmul; einsum's
    reshuffling costs more than the product itself in a decode step)."""
    return (x.transpose(1, 2) @ weight.to(x.dtype)).transpose(1, 2)


@dataclass
class StepKept:
    """What a mixer's decode steps reuse. Without autograd it is made at a cache's first step and kept on the
    cache's layer for its later steps (``state_cache.kept_for_steps``); under autograd each step makes its own,
    without projection views or fused weights, so gradients reach the parameters."""

    projections: tuple | None = (
        None  # ``Mixer.step_projections``: q, k, v, o as (weight, transposed view, bias), or None
    )
    map_weights: torch.Tensor | None = None  # ``step_map_weights``: the method's fused feature-map weights, or None
    window_factor: torch.Tensor | None = None  # the window's share, sigmoid(logit), [Hkv, G, 1]
    decays: tuple | None = None  # ``step_decays`` of the learned decay, or None
    ones: torch.Tensor | None = None  # the values' column of ones, [B, Hkv, 1, 1]
    sink_views: tuple | None = None  # (the full sink store, its keys, its values), while the cache holds that store


class LinearAttentionMixer(WindowedMixer):
    """Causal linear attention reusing an attention layer's q/k/v/o; a method's subclass sets its choices. A window
    joins it through one shared normaliser (``window_attn``) where the linear part has one: the window's softmax and
    the linear sum over the tokens that left the window weigh against each other per query, and sinks never enter
    the linear state. Where the output is GroupNorm'd instead (SUPRA) there is no normaliser to share: the window
    mixes its output with the linear part's as Liger does (``convert.window``)."""

    target = None
    feature_map = None  # the method's feature-map module class: (num_heads, head_dim, feature_dim) -> phi
    share_feature_map = True  # one map for queries and keys
    rotary_after_feature_map = False  # SUPRA: rotate phi(q), phi(k) instead of q, k
    fixed_decay = False  # per-head decays fixed by the method (``fixed_log_decays``)
    output_norm = False  # GroupNorm on the output instead of the normaliser
    default_feature_dim = None
    default_decay = None

    def __init__(
        self,
        config,
        layer_idx,
        feature_dim=None,
        window=None,
        decay=None,
        sinks=None,
        sparse_cache=None,
        sparse_chunk=None,
        sparse_select=None,
        mode="auto",
    ):
        super().__init__(config, layer_idx, mode)
        H, D = self.num_heads, self.head_dim
        self.feature_dim = feature_dim or self.default_feature_dim or D
        if feature_dim is not None and not (isinstance(feature_dim, int) and feature_dim >= 1):
            raise SettingError(f"bad --feature-dim {feature_dim!r}: a whole number >= 1")
        self.init_window(window, sinks)
        # decay = M tokens: a learned per-head decay of the linear state, starting with memory spans
        # (1 / (1 - decay)) spread geometrically from M / 8 to M. Without it the linear sum grows with
        # every token, so past the training length it swamps the window (benchmarks/smollm2/length.md).
        self.decay = self.default_decay if decay is None else (decay or None)
        if self.decay and self.fixed_decay:
            raise SettingError(f"{self.target} has fixed decays; --decay does not apply")
        if self.decay and not (isinstance(self.decay, int) and self.decay >= 16):
            raise SettingError(f"bad --decay {self.decay!r}: a memory span in tokens, a whole number >= 16 (0 = none)")
        if self.decay:
            self.decay_logit = nn.Parameter(torch.empty(H))
        fmap = self.feature_map
        self.feature_map_q = fmap(H, D, self.feature_dim)
        # A shared map is registered once, so checkpoints hold its weights once.
        self.feature_map_k = None if self.share_feature_map else fmap(H, D, self.feature_dim)
        if self.rotary_after_feature_map and self.feature_map_q.out_dim != D:
            raise ValueError(f"{self.target}: rotary after the feature map needs feature_dim == head_dim ({D})")
        if self.output_norm:
            self.group_norm = nn.GroupNorm(H, H * D)
        self.add_window_factor()  # the window's share per head, in the shared normaliser or in the output mix
        # sparse_cache = N: LoLA's sparse cache, N keys per key/value head that left the window kept exact in the
        # window's softmax, chosen by ``sparse_select``; training-free (benchmarks/smollm2/recall-cpu, recall-grid).
        self.sparse_cache = sparse_cache or 0
        self.sparse_chunk = sparse_chunk or SPARSE_CHUNK
        self.sparse_select = sparse_select or RECORDLESS_SELECT
        if self.sparse_select not in SELECTIONS:
            raise SettingError(f"bad --sparse-select {sparse_select!r}: one of {', '.join(SELECTIONS)}")
        if sparse_select and not self.sparse_cache:
            raise SettingError("--sparse-select chooses the keys of a sparse cache: give --sparse-cache N too")
        if not (isinstance(self.sparse_cache, int) and self.sparse_cache >= 0):
            raise SettingError(f"bad --sparse-cache {sparse_cache!r}: a whole number of keys per head >= 0")
        if self.sparse_cache and not self.shared_window:
            raise SettingError(
                f"--sparse-cache needs a softmax window that shares the linear part's normaliser ({self.target} "
                f"{'has none' if not self.window else 'mixes its window by output'})"
            )

    @property
    def shared_window(self):
        """A window that joins the linear part through the shared normaliser (else: none, or Liger's output mix)."""
        return bool(self.window) and not self.output_norm

    def settings(self):
        """What the checkpoint's config records to rebuild this mixer."""
        out = {**super().settings(), "feature_dim": self.feature_dim, **self.window_settings()}
        if self.decay:
            out["decay"] = self.decay
        if self.sparse_cache:
            out["sparse_cache"] = self.sparse_cache
            out["sparse_select"] = self.sparse_select
            if self.sparse_chunk != SPARSE_CHUNK:
                out["sparse_chunk"] = self.sparse_chunk
        return out

    def cache_layout(self):
        """A sparse cache keeps its own window among its exact keys: the layer's cache holds states only (the linear
        state, the sink store, the carry's two tensors)."""
        if self.sparse_cache:
            return "linear_attention", {"number_of_conv_states": SPARSE_ENTRIES + 1}
        return super().cache_layout()

    def reset_linearize_parameters(self):
        """Initialise only the parameters the conversion adds (transformers' init must not touch q/k/v/o)."""
        self.reset_window_parameters()
        if self.decay:
            span = torch.logspace(
                torch.log10(torch.tensor(self.decay / 8)), torch.log10(torch.tensor(float(self.decay))), self.num_heads
            )
            init.copy_(self.decay_logit, torch.log(span - 1))  # sigmoid(logit) = 1 - 1 / span
        if self.output_norm:
            init.ones_(self.group_norm.weight)
            init.zeros_(self.group_norm.bias)

    def fixed_log_decays(self):
        """Per-head log decays [H] that the method fixes (where ``fixed_decay``)."""
        raise NotImplementedError

    # -- memory ---------------------------------------------------------------------------------
    def state_bytes(self, batch_size=1, seq_len=0):
        """Bytes of this layer's decode state (fp32 linear state, plus the window's keys/values)."""
        V = self.head_dim + (0 if self.output_norm else 1)
        state = batch_size * self.num_heads * self.feature_map_q.out_dim * V * 4
        if self.sparse_cache:  # fp32 exact k, v per key/value head: the window, a chunk of pending keys, the cache;
            cap = self.sparse_cache + self.sparse_chunk + self.window  # and the sinks
            entries = batch_size * self.num_kv_heads * cap * (FIRST + 2 * self.head_dim) * 4
            return state + entries + batch_size * self.num_kv_heads * self.sinks * 2 * self.head_dim * 4
        # a shared normaliser's window values carry its ones
        return state + self.window_bytes(batch_size, self.head_dim + self.shared_window)

    # -- shared by both paths -------------------------------------------------------------------
    def map_k(self, k):
        return (self.feature_map_k or self.feature_map_q)(k)

    def rotated_qkv(self, hidden_states, position_embeddings, rotation=None, linears=None):
        """q [B, T, H, D], k and v at the key/value heads, rotary applied to q and k (per head: before repeat_kv)."""
        q, k, v = self.qkv(hidden_states, linears)
        q, k = self.rotate(q, k, position_embeddings, rotation)
        return q, k, v

    def features(self, q, k, v, position_embeddings, rotation=None):
        """From the projections q, k, v (k, v at the key/value heads, no rotary yet): q, k, v as [B, T, H, D] with k,
        v repeated to the query heads, and their feature maps fq, fk; rotary applied where the target says
        (``rotation``: the model's ``step_rotation`` for a one-token step)."""
        if self.rotary_after_feature_map:
            k, v = self.repeat_kv(k, v)
            fq, fk = self.apply_rotary(self.feature_map_q(q), self.map_k(k), *position_embeddings, unsqueeze_dim=2)
            return q, k, fq, fk, v
        q, k = self.rotate(q, k, position_embeddings, rotation)
        k, v = self.repeat_kv(k, v)
        return q, k, self.feature_map_q(q), self.map_k(k), v

    def output(self, o, hidden_states, cache, state, previous, linears=None):
        """The output projection of o; the layer's new state into the cache (a decode step that updated the
        cache's own state in place has nothing to write)."""
        if state is not previous:
            set_state(cache, self.layer_idx, state)
        B, T, _ = hidden_states.shape
        o = o.reshape(B * T, -1)  # 2D: a projection of a 3D input costs two more views (decode counts ops)
        o = o if o.dtype == hidden_states.dtype else o.to(hidden_states.dtype)
        return self.project_o(o, linears).view(B, T, -1), None

    def cached_window(self, kh, v1, attention_mask, cache, position_ids, first_position, kept=None):
        """Add the new keys and values (head-major [B, Hkv, T, *]) to the layer's window in the cache. Returns the
        window's keys and values [B, Hkv, P + T, *] (None without a cache), P, the key mask over them, and the
        sinks for the kernel (or None)."""
        T = kh.shape[2]
        keys, values = update_window(cache, self.layer_idx, kh, v1)
        P = 0 if keys is None else keys.shape[2] - T
        key_mask = None if attention_mask is None else attention_mask[:, -(P + T) :]
        if T == 1 and key_mask is not None and key_mask.device.type == "cpu" and bool(key_mask.all()):
            key_mask = None  # generate passes a mask; on CPU reading it is free and an all-ones window needs none
        sinks = None
        if self.sinks and self.past_the_sinks(T, keys, key_mask, position_ids, first_position):
            sinks = self.full_sinks(cache, kept)
        elif self.sinks:
            sinks, key_mask = self.sink_keys(kh, v1, attention_mask, key_mask, cache, position_ids, P)
        return keys, values, P, key_mask, sinks

    def mix(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        """One token after a cache: the decode step; else the torch forward (a sparse cache: its own form)."""
        if self.sparse_cache:
            return self.sparse_forward(hidden_states, position_embeddings, attention_mask, cache, **kwargs)
        if hidden_states.shape[1] == 1 and cache is not None:
            return self.decode_step(hidden_states, position_embeddings, attention_mask, cache, **kwargs)
        return self.torch_forward(hidden_states, position_embeddings, attention_mask, cache, **kwargs)

    # -- the reference forward: prefill, training, and the kernels' torch forms ----------------------
    def torch_forward(
        self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, linears=None, **kwargs
    ):
        """The layer over T tokens through the kernels' dispatch in ``self.mode`` (``linears``: a decode step's
        kept projection views, the modules' own products)."""
        B, T, _ = hidden_states.shape
        state = previous = get_state(cache, self.layer_idx)
        rotation = kwargs.get("step_rotation")
        if self.shared_window:
            o, state = self.window_forward(
                hidden_states,
                position_embeddings,
                attention_mask,
                cache,
                state,
                kwargs.get("position_ids"),
                rotation,
                kwargs.get("step_first_position"),
                linears,
            )
            return self.output(o, hidden_states, cache, state, previous, linears)
        log_decay = F.logsigmoid(self.decay_logit.float()) if self.decay else None
        q, k, v = self.qkv(hidden_states, linears)
        window = None
        if self.window:  # Liger's mix: the window's softmax reads q and k as the attention did, with rotary
            window = self.softmax_window(
                *self.rotate(q, k, position_embeddings, rotation), v, attention_mask, cache, kwargs.get("position_ids")
            )
        q, k, fq, fk, v = self.features(q, k, v, position_embeddings, rotation)
        fk = zero_where_padding(fk, new_token_mask(attention_mask, T))  # padding must not enter the state
        g = None if log_decay is None else log_decay[None, None].expand(B, T, -1)
        if self.fixed_decay:
            # Computed, not a buffer: transformers builds models on the meta device, where a
            # non-persistent buffer would never get its values.
            g = self.fixed_log_decays().to(q.device)[None, None].expand(B, T, -1)
        if self.output_norm:
            o, state = linear_attn(
                fq,
                fk,
                v,
                g=g,
                scale=fq.shape[-1] ** -0.5,
                initial_state=state,
                output_final_state=cache is not None,
                mode=self.mode,
            )
            gn = self.group_norm  # in fp32 whatever the model's dtype (bf16 statistics are too coarse)
            o = F.group_norm(o.reshape(B * T, -1).float(), gn.num_groups, gn.weight.float(), gn.bias.float(), gn.eps)
            if window is not None:
                o = self.mix_window(window, o.view(B, T, self.num_heads, -1))
        else:
            o, state = normalized_linear_attn(
                fq, fk, v, g=g, initial_state=state, output_final_state=cache is not None, mode=self.mode
            )
        return self.output(o, hidden_states, cache, state, previous, linears)

    def window_forward(
        self,
        hidden_states,
        position_embeddings,
        attention_mask,
        cache,
        state,
        position_ids=None,
        rotation=None,
        first_position=None,
        linears=None,
    ):
        """The window's keys and values live in the cache as the teacher's would: at the key/value heads, before
        repeat_kv and without feature maps; the values (and the sink store's) carry the normaliser's column of ones,
        so a decode step's one product gives the numerator and denominator. A prefill after a cache repeats and maps
        the cached part once."""
        D, T = self.head_dim, hidden_states.shape[1]
        q, k, v = self.rotated_qkv(hidden_states, position_embeddings, rotation, linears)
        kh, vh = k.transpose(1, 2), v.transpose(1, 2)
        v1 = with_ones(vh) if cache is not None or self.sinks else None
        keys, values, P, key_mask, sinks = self.cached_window(
            kh, v1, attention_mask, cache, position_ids, first_position
        )
        log_decay = F.logsigmoid(self.decay_logit.float()) if self.decay else None
        fq, factor = self.feature_map_q(q), torch.sigmoid(self.window_factor)
        k, v = self.repeat_kv(k, v)
        fk = zero_where_padding(self.map_k(k), new_token_mask(attention_mask, T))  # padding must not enter the state
        past = None
        if P:
            past_k, past_v = self.repeat_kv(keys[:, :, :P].transpose(1, 2), values[:, :, :P, :D].transpose(1, 2))
            past = (past_k, self.map_k(past_k), past_v)  # padded keys are masked out by key_mask
        if sinks is not None:  # the store is head-major; the chunked forms take time-major keys at the query heads
            sinks = (*self.repeat_kv(sinks[0].transpose(1, 2), sinks[1][..., :D].transpose(1, 2)), sinks[2])
        return window_attn(
            q,
            k,
            fq,
            fk,
            v,
            factor,
            self.window,
            D**-0.5,
            mode=self.mode,
            key_mask=key_mask,
            past=past,
            initial_state=state,
            log_decay=log_decay,
            sinks=sinks,
        )

    def sparse_forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        """The window with LoLA's sparse cache, for any number of tokens, from the start or continuing from the
        cache's carry (``sparse_window_attn``, the reference form; its selection depends on positions only, so a
        prefill, a continued prefill and decode steps agree)."""
        T, D = hidden_states.shape[1], self.head_dim
        q, k, v = self.rotated_qkv(hidden_states, position_embeddings, kwargs.get("step_rotation"))
        sinks = None
        if self.sinks:  # the store holds [k | v] at the key/value heads
            kh, vh = k.transpose(1, 2), v.transpose(1, 2)
            (k_s, v_s, visible), _ = self.sink_keys(kh, vh, attention_mask, None, cache, kwargs.get("position_ids"), 0)
            sinks = (*self.repeat_kv(k_s.transpose(1, 2), v_s.transpose(1, 2)), visible)
        k, v = self.repeat_kv(k, v)
        log_decay = F.logsigmoid(self.decay_logit.float()) if self.decay else None
        carry = None
        if get_state(cache, self.layer_idx, SPARSE_META) is not None:
            carry = tuple(get_state(cache, self.layer_idx, i) for i in (0, SPARSE_META, SPARSE_ENTRIES))
        o, carry = sparse_window_attn(
            q,
            k,
            self.feature_map_q(q),
            self.map_k(k),
            v,
            torch.sigmoid(self.window_factor),
            self.window,
            D**-0.5,
            self.sparse_cache,
            key_mask=new_token_mask(attention_mask, T),
            log_decay=log_decay,
            sinks=sinks,
            chunk_size=self.sparse_chunk,
            groups=self.num_heads // self.num_kv_heads,
            select=self.sparse_select,
            carry=carry,
            feature_map=lambda keys: self.map_k(keys.to(v.dtype)),  # the carry's k are fp32
        )
        if cache is not None:
            for i, x in zip((0, SPARSE_META, SPARSE_ENTRIES), carry):
                set_state(cache, self.layer_idx, x, i)
        return self.output(o, hidden_states, cache, None, None)

    # -- the decode step: one token after a cache, a few batched products on what the cache holds ------
    def decode_step(self, hidden_states, position_embeddings, attention_mask, cache, **kwargs):
        """One token after a cache. A window in the 'auto' or 'fla' mode reads the cached window in place
        (``window_step``); other layers run the reference on the one token with the kept projections."""
        step = self.shared_window and self.mode in ("auto", "fla")
        if not torch.is_grad_enabled():
            kept = kept_for_steps(
                cache, self.layer_idx, self.keep_for_steps, hidden_states.dtype, hidden_states.shape[0]
            )
        elif step:  # under autograd nothing is kept: the step's constants are made from the parameters
            kept = StepKept(None, None, *self.window_constants())
        else:
            kept = StepKept()
        if not step:
            return self.torch_forward(
                hidden_states, position_embeddings, attention_mask, cache, linears=kept.projections, **kwargs
            )
        return self.window_step(
            hidden_states,
            position_embeddings,
            attention_mask,
            cache,
            kept,
            kwargs.get("position_ids"),
            kwargs.get("step_rotation"),
            kwargs.get("step_first_position"),
        )

    def keep_for_steps(self, dtype, batch_size):
        """A cache's ``StepKept``, made at its first step without autograd. It is made afresh for every cache (and
        after a reset) and never shared between caches, so weights changed in place, loaded or cast between two
        generations are always seen, with no version counters to compare; within one cache the projections are
        views of the weights, so in-place changes to q/k/v/o reach its later steps, while changes to feature maps,
        window factor or decays wait for the next cache."""
        if not self.shared_window:
            return StepKept(self.step_projections())
        ones = torch.ones(batch_size, self.num_kv_heads, 1, 1, dtype=dtype, device=self.q_proj.weight.device)
        return StepKept(self.step_projections(), self.step_map_weights(dtype), *self.window_constants(), ones)

    def window_constants(self):
        """(the window's share sigmoid(logit) as [Hkv, G, 1], ``step_decays`` or None) for a decode step; in fp32
        without autograd (to be kept), from the parameters as they are under it."""
        grad = torch.is_grad_enabled()
        logit = self.window_factor if grad else self.window_factor.detach().float()
        decays = None
        if self.decay:
            log_decay = F.logsigmoid((self.decay_logit if grad else self.decay_logit.detach()).float())
            decays = step_decays(log_decay, self.window)
        return torch.sigmoid(logit).view(self.num_kv_heads, -1, 1), decays

    def step_map_weights(self, dtype):
        """The feature maps' weights fused for ``step_features``, or None: the maps' own forwards."""
        return None

    def step_features(self, q, k=None, weights=None):
        """A decode step's features: of the query q [B, H, D] (or [B, 1, H, D]), and, where the window's first key
        k [B, Hkv, 1, D] (at the key/value heads, as the cache holds it) leaves the window, of that key at each of its
        G query heads ([B, 1, H, F]). ``weights``: ``step_map_weights``, where a method fuses its maps."""
        fk = None if k is None else self.map_k(self.repeat_kv(k.transpose(1, 2))[0])
        return self.feature_map_q(q), fk

    def window_step(
        self,
        hidden_states,
        position_embeddings,
        attention_mask,
        cache,
        kept,
        position_ids=None,
        rotation=None,
        first_position=None,
    ):
        """The window's decode step: q [B, H, D] reads the cached window in place (a token's step is op overhead,
        not FLOPs), only the key leaving the window is mapped, and an fp32 state is updated in place."""
        state = previous = get_state(cache, self.layer_idx)
        linears = kept.projections
        q, kh, vh = self.step_qkv(hidden_states, position_embeddings, rotation, linears)
        ones = kept.ones
        if ones is not None and ones.shape[0] != kh.shape[0]:
            ones = None  # a batch changed within the cache (beam search)
        keys, values, _, key_mask, sinks = self.cached_window(
            kh, with_ones(vh, ones), attention_mask, cache, position_ids, first_position, kept
        )
        fq, evicted = self.step_features(q, keys[:, :, :1] if keys.shape[2] == self.window else None, kept.map_weights)
        inplace = state is not None and state.dtype == torch.float32 and not torch.is_grad_enabled()
        o, state = window_attn_step(
            q,
            fq,
            keys,
            values,
            kept.window_factor,
            self.window,
            self.head_dim**-0.5,
            key_mask=key_mask,
            initial_state=state,
            decays=kept.decays,
            sinks=sinks,
            evicted=evicted,
            inplace=inplace,
        )
        return self.output(o, hidden_states, cache, state, previous, linears)

    # -- attention sinks ----------------------------------------------------------------------------
    def full_sinks(self, cache, kept=None):
        """The sink store's keys and values, all visible, once it is full and no window key is a sink: the store is
        then never rewritten, so a decode step's ``kept`` holds its two views while the cache holds the same
        tensor."""
        store = get_state(cache, self.layer_idx, SINK_STATE)
        if kept is not None and kept.sink_views is not None and kept.sink_views[0] is store:
            return kept.sink_views[1]
        D = self.head_dim
        views = (store[..., :D], store[..., D:], None)
        if kept is not None:
            kept.sink_views = (store, views)
        return views

    def past_the_sinks(self, T, keys, key_mask, position_ids, first_position=None):
        """A CPU decode step where every row is at position >= sinks + window - 1 with no padding in its window (an
        all-ones window mask is dropped before this is asked): the sink store is full and stays so, no window key is
        a sink, and nothing needs a mask (the general path costs many more ops a step). The check reads the rows'
        first position on the host (``first_position``: the model reads it once a step for all its mixers): free on
        CPU, where tensors are synchronous, but a stall on a GPU stream, so GPUs take the general path."""
        if T != 1 or keys is None or key_mask is not None:
            return False
        if first_position is None:
            if position_ids is None or position_ids.device.type != "cpu":
                return False
            first_position = int(position_ids.min())
        return first_position >= self.sinks + self.window - 1
