"""Mixers: the modules that replace softmax attention, built from the attention they replace.

Every mixer keeps the base attention's q/k/v/o projections (and Qwen3's per-head q/k norms) under
the same names, takes the same call as the attention module and returns ``(output, None)``. Its
state lives in transformers' cache (``convert.state_cache``): the linear state as the layer's recurrent
state, and for the sliding-window hybrid the window's keys and values in the same layer (``hybrid_sliding``).
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from linearize.convert.state_cache import get_state, kept_for_steps, set_state, update_window
from linearize.convert.mixer_base import SINK_STATE, Mixer, SettingError, new_token_mask, zero_where_padding
from linearize.convert.feature_maps import FEATURE_MAPS, HedgehogFeatureMap, hedgehog
from linearize.kernels.linear_attn.dispatch import linear_attn, normalized_linear_attn
from linearize.kernels.window_attn.dispatch import step_decays, window_attn, window_attn_step, with_ones


def retnet_log_decays(num_heads):
    """log(1 - 2^(-5 - h)) per head: the fixed multi-scale decays of RetNet, which SUPRA adopts."""
    return torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(num_heads, dtype=torch.float32)))


class LinearAttentionMixer(Mixer):
    """Causal linear attention reusing an attention layer's q/k/v/o; subclasses set the target's choices."""

    target = None
    feature_map = "elu"
    share_feature_map = True  # one map for queries and keys
    rotary_after_feature_map = False  # SUPRA: rotate phi(q), phi(k) instead of q, k
    fixed_decay = False  # per-head decays fixed at RetNet's values
    output_norm = False  # GroupNorm on the output instead of the normaliser
    default_window = 0  # > 0: softmax over this many recent tokens, linear attention beyond
    default_feature_dim = None
    default_decay = None

    def __init__(self, config, layer_idx, feature_dim=None, window=None, decay=None, sinks=None, mode="auto"):
        super().__init__(config, layer_idx, mode)
        H, D = self.num_heads, self.head_dim
        self.feature_dim = feature_dim or self.default_feature_dim or D
        self.window = self.default_window if window is None else window
        if feature_dim is not None and not (isinstance(feature_dim, int) and feature_dim >= 1):
            raise SettingError(f"bad --feature-dim {feature_dim!r}: a whole number >= 1")
        if not (isinstance(self.window, int) and (self.window == 0 or self.window >= 2)):
            # A window of 1 leaves the sliding cache nothing to keep (it holds window - 1 tokens).
            raise SettingError(f"bad --window {window!r}: a whole number of tokens >= 2 (or 0 for none)")
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
        # sinks = S: the sequence's first S tokens stay visible to every query through the window's softmax
        # and never enter the linear state (StreamingLLM's attention sinks; LoLA keeps them too). Softmax
        # heads park attention on the first tokens; a window without them must spread that mass elsewhere.
        self.sinks = sinks or 0
        if self.sinks and not self.window:
            raise SettingError(f"--sinks needs a softmax window ({self.target} has none)")
        if not (isinstance(self.sinks, int) and self.sinks >= 0):
            raise SettingError(f"bad --sinks {sinks!r}: a whole number of tokens >= 0")
        fmap = FEATURE_MAPS[self.feature_map]
        self.feature_map_q = fmap(H, D, self.feature_dim)
        # A shared map is registered once, so checkpoints hold its weights once.
        self.feature_map_k = None if self.share_feature_map else fmap(H, D, self.feature_dim)
        if self.rotary_after_feature_map and self.feature_map_q.out_dim != D:
            raise ValueError(f"{self.target}: rotary after the feature map needs feature_dim == head_dim ({D})")
        if self.output_norm:
            self.group_norm = nn.GroupNorm(H, H * D)
        if self.window:
            # Per-head mix between the window's softmax and the linear part, stored as a logit.
            self.window_factor = nn.Parameter(torch.zeros(H))
        self._step_cache = None  # see step_constants
        self._sink_views = None  # see full_sinks

    def settings(self):
        """What the checkpoint's config records to rebuild this mixer."""
        out = {**super().settings(), "feature_dim": self.feature_dim}
        if self.window:
            out["window"] = self.window
        if self.decay:
            out["decay"] = self.decay
        if self.sinks:
            out["sinks"] = self.sinks
        return out

    def reset_linearize_parameters(self):
        """Initialise only the parameters the conversion adds (transformers' init must not touch q/k/v/o)."""
        if self.window:
            init.zeros_(self.window_factor)
        if self.decay:
            span = torch.logspace(torch.log10(torch.tensor(self.decay / 8)), torch.log10(torch.tensor(float(self.decay))),
                                  self.num_heads)
            init.copy_(self.decay_logit, torch.log(span - 1))  # sigmoid(logit) = 1 - 1 / span
        if self.output_norm:
            init.ones_(self.group_norm.weight)
            init.zeros_(self.group_norm.bias)

    # -- memory ---------------------------------------------------------------------------------
    def state_bytes(self, batch_size=1, seq_len=0):
        """Bytes of this layer's decode state (fp32 linear state, plus the window's keys/values)."""
        V = self.head_dim + (0 if self.output_norm else 1)
        state = batch_size * self.num_heads * self.feature_map_q.out_dim * V * 4
        if self.window:
            per_token = self.num_kv_heads * (2 * self.head_dim + 1)  # keys, values + ones at the key/value heads
            state += batch_size * (self.window - 1 + self.sinks) * per_token * self.q_proj.weight.element_size()
        return state

    # -- forward --------------------------------------------------------------------------------
    def map_k(self, k):
        return (self.feature_map_k or self.feature_map_q)(k)

    def _apply(self, fn, recurse=True):  # .to() / .half() / .cuda(): step constants are rebuilt from the new weights
        self._step_cache = self._sink_views = None
        return super()._apply(fn, recurse)

    def reused_by_steps(self, dtype, batch_size):
        """What every decode step of one cache reuses (``kept_for_steps``): (``step_projections``; for a window,
        ``step_constants`` and the values' column of ones [B, Hkv, 1, 1]; else four None)."""
        if not self.window:
            return (self.step_projections(), None, None, None, None)
        ones = torch.ones(batch_size, self.num_kv_heads, 1, 1, dtype=dtype, device=self.q_proj.weight.device)
        return (self.step_projections(), *self.step_constants(dtype), ones)

    def step_constants(self, dtype):
        """(Hedgehog's query and key map weights stacked, [2H, D, F], or None for other maps; the window factor
        sigmoid(logit) as [Hkv, G, 1]; ``step_decays`` or None) for a decode step. Without autograd they are kept
        in the mixer, shared by every cache's steps (``reused_by_steps``: asked at a cache's first step), keyed by
        the parameters' identities and versions (in-place updates and state-dict loads bump them; .to() drops
        them). The stacked weights are a copy
        (295 KB a layer at SmolLM2's shape), half the size of the signed [W, -W] copy kept before: a step reads them
        from memory, and their bytes cost more than the negation and stacking of the two softmaxes' inputs."""
        if torch.is_grad_enabled():
            decays = step_decays(F.logsigmoid(self.decay_logit.float()), self.window) if self.decay else None
            return None, torch.sigmoid(self.window_factor).view(self.num_kv_heads, -1, 1), decays
        map_q = self._modules["feature_map_q"]
        map_k = self._modules["feature_map_k"] or map_q
        params = (self._parameters["window_factor"], self._parameters.get("decay_logit"),
                  map_q._parameters.get("weight"), map_k._parameters.get("weight"))
        key = (dtype,) + tuple(None if p is None else (id(p), p.data_ptr(), p._version) for p in params)
        if self._step_cache is None or self._step_cache[0] != key:
            weights = decays = None
            if isinstance(map_q, HedgehogFeatureMap) and isinstance(map_k, HedgehogFeatureMap):
                weights = torch.cat([map_q.weight, map_k.weight]).detach().to(dtype)
            if self.decay:
                decays = step_decays(F.logsigmoid(self.decay_logit.detach().float()), self.window)
            factor = torch.sigmoid(self.window_factor.detach().float()).view(self.num_kv_heads, -1, 1)
            self._step_cache = (key, weights, factor, decays)
        return self._step_cache[1:]

    def step_features(self, q, k=None, weights=None):
        """A decode step's features: of the query q [B, H, D] (or [B, 1, H, D]), and, where the window's first key
        k [B, Hkv, 1, D] (at the key/value heads, as the cache holds it) leaves the window, of that key at each of its
        G query heads; both in [B, H] order first. With ``step_constants``' stacked Hedgehog weights both maps are
        one batched product over 2H heads and one pair of softmaxes; without them, the maps' forwards
        ([B, 1, H, F])."""
        if weights is None:
            fk = None if k is None else self.map_k(self.repeat_kv(k.transpose(1, 2))[0])
            return self.feature_map_q(q), fk
        B, H, D = q.shape[0], q.shape[-2], q.shape[-1]
        Hkv = self.num_kv_heads
        one = B == 1  # one sequence: head-major and batch-major layouts are the same memory, and views suffice
        # [Hkv, G, B, D]: head-major, as the weights
        x = q.view(Hkv, H // Hkv, 1, D) if one else q.view(B, Hkv, H // Hkv, D).permute(1, 2, 0, 3)
        if k is None:
            z = torch.bmm(x.reshape(H, B, D), weights[:H])
        else:  # the leaving key once per query head that reads it (repeat_kv's order)
            k = k.view(Hkv, 1, 1, D) if one else k.permute(1, 2, 0, 3)
            z = torch.bmm(torch.cat([x, k.expand_as(x)]).view(2 * H, B, D), weights)
        f = hedgehog(z)  # [H or 2H, B, 2, F]
        if not one:
            f = f.transpose(0, 1)
            return (f, None) if k is None else (f[:, :H], f[:, H:])
        return (f, None) if k is None else (f[:H], f[H:])

    def rotated_qkv(self, hidden_states, position_embeddings, rotation=None, linears=None):
        """q [B, T, H, D], k and v at the key/value heads, rotary applied to q and k (per head: before repeat_kv)."""
        q, k, v = self.qkv(hidden_states, linears)
        q, k = self.rotate(q, k, position_embeddings, rotation)
        return q, k, v

    def project(self, hidden_states, position_embeddings, rotation=None, linears=None):
        """q, k, v as [B, T, H, D] with k, v repeated to the query heads, and their feature maps fq, fk; rotary
        applied where the target says (``rotation``: the model's ``step_rotation`` for a one-token step)."""
        if self.rotary_after_feature_map:
            q, k, v = self.qkv(hidden_states, linears)
            k, v = self.repeat_kv(k, v)
            fq, fk = self.apply_rotary(self.feature_map_q(q), self.map_k(k), *position_embeddings, unsqueeze_dim=2)
            return q, k, fq, fk, v
        q, k, v = self.rotated_qkv(hidden_states, position_embeddings, rotation, linears)
        k, v = self.repeat_kv(k, v)
        return q, k, self.feature_map_q(q), self.map_k(k), v

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        """attention_mask: the 2D padding mask over all tokens so far (1 = real token) or None."""
        B, T, _ = hidden_states.shape
        state = previous = get_state(cache, self.layer_idx)
        rotation = kwargs.get("step_rotation")
        kept = None  # a decode step without autograd reuses what the cache's first step made
        if T == 1 and cache is not None and not torch.is_grad_enabled():
            kept = kept_for_steps(cache, self.layer_idx, self.reused_by_steps, hidden_states.dtype, B)
        linears = None if kept is None else kept[0]
        if self.window:
            o, state = self.window_forward(hidden_states, position_embeddings, attention_mask, cache, state,
                                           kwargs.get("position_ids"), rotation, kwargs.get("step_first_position"),
                                           kept)
        else:
            log_decay = F.logsigmoid(self.decay_logit.float()) if self.decay else None
            q, k, fq, fk, v = self.project(hidden_states, position_embeddings, rotation, linears)
            fk = zero_where_padding(fk, new_token_mask(attention_mask, T))  # padding must not enter the state
            g = None if log_decay is None else log_decay[None, None].expand(B, T, -1)
            if self.fixed_decay:
                # Computed, not a buffer: transformers builds models on the meta device, where a
                # non-persistent buffer would never get its values.
                g = retnet_log_decays(self.num_heads).to(q.device)[None, None].expand(B, T, -1)
            if self.output_norm:
                o, state = linear_attn(fq, fk, v, g=g, scale=fq.shape[-1] ** -0.5, initial_state=state,
                                       output_final_state=cache is not None, mode=self.mode)
                gn = self.group_norm  # in fp32 whatever the model's dtype (bf16 statistics are too coarse)
                o = F.group_norm(o.reshape(B * T, -1).float(), gn.num_groups, gn.weight.float(), gn.bias.float(), gn.eps)
            else:
                o, state = normalized_linear_attn(fq, fk, v, g=g, initial_state=state,
                                                  output_final_state=cache is not None, mode=self.mode)
        if state is not previous:  # a decode step updates the cache's own state in place
            set_state(cache, self.layer_idx, state)
        o = o.reshape(B * T, -1)  # 2D: a projection of a 3D input costs two more views (decode counts ops)
        o = o if o.dtype == hidden_states.dtype else o.to(hidden_states.dtype)
        return self.project_o(o, linears).view(B, T, -1), None

    def window_forward(self, hidden_states, position_embeddings, attention_mask, cache, state, position_ids=None,
                       rotation=None, first_position=None, kept=None):
        """The window's keys and values live in the cache as the teacher's would: at the key/value heads, before
        repeat_kv and without feature maps; the values (and the sink store's) carry the normaliser's column of ones,
        so a decode step's one product gives the numerator and denominator. A decode step reads them in place and
        maps only the key leaving the window; a prefill after a cache repeats and maps the cached part once."""
        D = self.head_dim
        # Decode (q [B, H, D]) reads the cached window in place (a token's step is op overhead, not FLOPs).
        step = hidden_states.shape[1] == 1 and cache is not None and self.mode in ("auto", "fla")
        linears, weights, factor, decays, ones = (None,) * 5 if kept is None else kept
        if step:
            q, kh, vh = self.step_qkv(hidden_states, position_embeddings, rotation, linears)
        else:
            q, k, v = self.rotated_qkv(hidden_states, position_embeddings, rotation, linears)
            kh, vh = k.transpose(1, 2), v.transpose(1, 2)
        T = hidden_states.shape[1]
        if ones is not None and ones.shape[0] != kh.shape[0]:
            ones = None  # a batch changed within the cache (beam search)
        v1 = with_ones(vh, ones) if cache is not None or self.sinks else None
        keys, values = update_window(cache, self.layer_idx, kh, v1)  # head-major [B, Hkv, P + T, D (+ 1)]
        P = 0 if keys is None else keys.shape[2] - T
        key_mask = None if attention_mask is None else attention_mask[:, -(P + T) :]
        if T == 1 and key_mask is not None and key_mask.device.type == "cpu" and bool(key_mask.all()):
            key_mask = None  # generate passes a mask; on CPU reading it is free and an all-ones window needs none
        sinks = None
        if self.sinks and self.past_the_sinks(T, keys, key_mask, position_ids, first_position):
            sinks = self.full_sinks(cache)
        elif self.sinks:
            sinks, key_mask = self.sink_keys(kh, v1, attention_mask, key_mask, cache, position_ids, P)
        scale = D**-0.5
        if step:
            if kept is None:
                weights, factor, decays = self.step_constants(q.dtype)
            fq, evicted = self.step_features(q, keys[:, :, :1] if keys.shape[2] == self.window else None, weights)
            inplace = state is not None and state.dtype == torch.float32 and not torch.is_grad_enabled()
            return window_attn_step(q, fq, keys, values, factor, self.window, scale, key_mask=key_mask,
                                    initial_state=state, decays=decays, sinks=sinks, evicted=evicted,
                                    inplace=inplace)
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
        return window_attn(q, k, fq, fk, v, factor, self.window, scale, mode=self.mode, key_mask=key_mask, past=past,
                           initial_state=state, log_decay=log_decay, sinks=sinks)

    def full_sinks(self, cache):
        """The sink store's keys and values, all visible, once it is full and no window key is a sink: the store is
        then never rewritten, so its two views are kept while the cache holds the same tensor (two ops a step)."""
        store = get_state(cache, self.layer_idx, SINK_STATE)
        kept = self._sink_views
        if kept is None or kept[0] is not store:
            D = self.head_dim
            kept = self._sink_views = (store, (store[..., :D], store[..., D:], None))
        return kept[1]

    def past_the_sinks(self, T, keys, key_mask, position_ids, first_position=None):
        """A CPU decode step where every row is at position >= sinks + window - 1 with no padding in its window (an
        all-ones window mask is dropped before this is asked): the sink store is full and stays so, no window key is
        a sink, and nothing needs a mask (the general path costs about 30 ops a step). The check reads the rows'
        first position on the host (``first_position``: the model reads it once a step for all its mixers): free on
        CPU, where tensors are synchronous, but a stall on a GPU stream, so GPUs take the general path."""
        if T != 1 or keys is None or key_mask is not None:
            return False
        if first_position is None:
            if position_ids is None or position_ids.device.type != "cpu":
                return False
            first_position = int(position_ids.min())
        return first_position >= self.sinks + self.window - 1

    def sink_keys(self, kh, v1, attention_mask, key_mask, cache, position_ids, P):
        """(sinks for the kernel at the key/value heads, key mask without the sink tokens). Slot s of the sink store
        [B, Hkv, S, D + V + 1] (head-major, as the window) holds the token at position s of its row (positions count
        real tokens, so left padding is handled): its key and its value with the ones column (the new tokens' ``kh``
        and ``v1``, head-major [B, Hkv, T, *]); the store is the layer's second recurrent state in the cache."""
        B, T = kh.shape[0], kh.shape[2]
        S, D = self.sinks, self.head_dim
        pos = torch.arange(T, device=kh.device)[None] if position_ids is None else position_ids
        pos = pos.to(kh.device).expand(B, T)
        valid = new_token_mask(attention_mask, T)
        valid = torch.ones(B, T, dtype=torch.bool, device=kh.device) if valid is None else valid
        store = get_state(cache, self.layer_idx, SINK_STATE)
        if store is None:
            store = kh.new_zeros(B, self.num_kv_heads, S, D + v1.shape[-1])
        slot = (pos[..., None] == torch.arange(S, device=kh.device)) & valid[..., None]  # [B, T, S]
        kv = torch.cat([kh, v1.to(kh.dtype)], -1)
        if T == 1:  # decode: the token fills its slot, if it has one, by a broadcast
            store = torch.where(slot.view(B, 1, S, 1), kv, store.to(kh.dtype))
            key_pos = pos - P + torch.arange(P + 1, device=kh.device)
        else:
            written = torch.einsum("bts,bhtd->bhsd", slot.to(kh.dtype), kv)
            store = torch.where(slot.any(1)[:, None, :, None], written, store.to(kh.dtype))
            key_pos = torch.cat([pos[:, :1] - P + torch.arange(P, device=kh.device)[None], pos], 1)
        set_state(cache, self.layer_idx, store, SINK_STATE)
        visible = torch.arange(S, device=kh.device)[None, None] <= pos[..., None]  # slots fill in position order
        not_sink = key_pos >= S
        key_mask = not_sink if key_mask is None else key_mask.bool() & not_sink
        return (store[..., :D], store[..., D:], visible), key_mask


class EluLinearAttention(LinearAttentionMixer):
    """Linear attention with phi(x) = elu(x) + 1 and its normaliser, no new parameters.

    Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive Transformers with Linear
    Attention", ICML 2020.
    """

    target = "linear"
    feature_map = "elu"


class T2RAttention(LinearAttentionMixer):
    """Linear attention with a learned ReLU-MLP feature map shared by queries and keys.

    Kasai et al., "Finetuning Pretrained Transformers into RNNs", EMNLP 2021.
    """

    target = "t2r"
    feature_map = "relu_mlp"


class HedgehogAttention(LinearAttentionMixer):
    """Linear attention with Hedgehog's learned feature maps (separate for queries and keys).

    Zhang et al., "The Hedgehog & the Porcupine: Expressive Linear Attentions with Softmax
    Mimicry", ICLR 2024.
    """

    target = "hedgehog"
    feature_map = "hedgehog"
    share_feature_map = False
    default_feature_dim = 64


class LoLCATsAttention(HedgehogAttention):
    """Hedgehog feature maps plus softmax attention over a sliding window of 64 tokens, mixed per head
    by a learned factor in one shared normaliser.

    Zhang et al., "LoLCATs: On Low-Rank Linearizing of Large Language Models", ICLR 2025.
    """

    target = "lolcats"
    default_window = 64


class SupraAttention(LinearAttentionMixer):
    """Shared trainable linear + ReLU feature map, rotary applied after it, fixed per-head (RetNet)
    decays, and GroupNorm on the output in place of the normaliser.

    Mercat et al., "Linearizing Large Language Models" (SUPRA), COLM 2024.
    """

    target = "supra"
    feature_map = "shared_relu"
    rotary_after_feature_map = True
    fixed_decay = True
    output_norm = True
