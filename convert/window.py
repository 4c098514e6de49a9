"""The softmax window and attention sinks a converted layer may have, whatever its recurrence (DESIGN.md, "A converted
layer"): ``--window N`` keeps softmax attention over each query's last N tokens, ``--sinks S`` keeps the sequence's
first S tokens visible to that softmax. The window's keys and values live in the layer's cache beside the
recurrence's state (``hybrid_sliding``), the sink store as the layer's second recurrent state.

The window joins the recurrence in one of two ways, which each method's module states:
- through one shared normaliser, where the recurrence has one (LoLCATs: ``linear_mixer``, which runs both parts in
  the ``window_attn`` kernel; the recurrence then sees only tokens that left the window);
- by mixing outputs, where it has none or where the published method does (Liger: GLA, and Mamba-2 and Gated
  DeltaNet): output = a * window + (1 - a) * recurrence per head, a = sigmoid of a learned logit starting at 0
  (a = 0.5, Liger's 0.5 / 0.5); the recurrence runs over every token, as its own forms and state always do
  (``softmax_window`` and ``mix_window`` below).
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from linearize.convert.mixer_base import SINK_STATE, Mixer, new_token_mask
from linearize.convert.state_cache import get_state, set_state, update_window
from linearize.errors import SettingError
from linearize.kernels.window_attn.dispatch import window_softmax


class WindowedMixer(Mixer):
    """A mixer that may have a softmax window and sinks (``init_window``); without them it is its recurrence alone."""

    default_window = 0  # > 0: a window unless --window 0

    def init_window(self, window=None, sinks=None):
        """Check and record the window and sinks (``window_factor``, the mix's logit, comes from
        ``add_window_factor``, where the method registers its parameters)."""
        self.window = self.default_window if window is None else window
        if not (isinstance(self.window, int) and (self.window == 0 or self.window >= 2)):
            # A window of 1 leaves the sliding cache nothing to keep (it holds window - 1 tokens).
            raise SettingError(f"bad --window {window!r}: a whole number of tokens >= 2 (or 0 for none)")
        # sinks = S: the sequence's first S tokens stay visible to every query through the window's softmax
        # (StreamingLLM's attention sinks; LoLA keeps them too). Softmax heads park attention on the first tokens;
        # a window without them must spread that mass elsewhere.
        self.sinks = sinks or 0
        if self.sinks and not self.window:
            raise SettingError(f"--sinks needs a softmax window ({self.target} has none)")
        if not (isinstance(self.sinks, int) and self.sinks >= 0):
            raise SettingError(f"bad --sinks {sinks!r}: a whole number of tokens >= 0")

    def add_window_factor(self):
        """The window's per-head share, stored as a logit (``reset_window_parameters`` starts it at 0: a = 0.5)."""
        if self.window:
            self.window_factor = nn.Parameter(torch.empty(self.num_heads))

    def reset_window_parameters(self):
        if self.window:
            init.zeros_(self.window_factor)

    def window_settings(self):
        """The window and sinks, where set, for ``settings``."""
        return {**({"window": self.window} if self.window else {}), **({"sinks": self.sinks} if self.sinks else {})}

    def cache_layout(self):
        """A window's keys and values sit beside the recurrence's state (and the sink store as a second state)."""
        if not self.window:
            return self.cache_layer, {}
        extra = {"sliding_window": self.window}
        if self.sinks:
            extra["number_of_conv_states"] = 2  # the recurrence's state(s) and the sink store
        return "hybrid_sliding", extra

    def window_bytes(self, batch_size, value_dim):
        """Bytes of the cached window (window - 1 tokens) and sinks: a key and ``value_dim`` values per key/value
        head and token."""
        if not self.window:
            return 0
        per_token = self.num_kv_heads * (self.head_dim + value_dim)
        return batch_size * (self.window - 1 + self.sinks) * per_token * self.q_proj.weight.element_size()

    # -- Liger's way: the window's softmax alone, its output mixed with the recurrence's ------------------------
    def softmax_window(self, q, k, v, attention_mask, cache, position_ids=None):
        """Softmax attention of q [B, T, H, D] over the window and the sinks, keys k (rotary applied) and values v
        [B, T, Hkv, D] at the key/value heads, as the teacher caches them; the cache keeps the window's last
        window - 1 tokens and the sinks. Returns [B, T, H, D]."""
        T, D = q.shape[1], self.head_dim
        kh, vh = k.transpose(1, 2), v.transpose(1, 2)
        keys, values = update_window(cache, self.layer_idx, kh, vh)
        P = 0 if keys is None else keys.shape[2] - T
        key_mask = None if attention_mask is None else attention_mask[:, -(P + T) :]
        sinks = past = None
        if self.sinks:
            (k_s, v_s, visible), key_mask = self.sink_keys(kh, vh, attention_mask, key_mask, cache, position_ids, P)
            sinks = (*self.repeat_kv(k_s.transpose(1, 2), v_s.transpose(1, 2)), visible)
        if P:
            past = self.repeat_kv(keys[:, :, :P].transpose(1, 2), values[:, :, :P].transpose(1, 2))
        k, v = self.repeat_kv(k, v)
        return window_softmax(q, k, v, self.window, D**-0.5, mode=self.mode, key_mask=key_mask, past=past, sinks=sinks)

    def mix_window(self, window_out, recurrent_out):
        """a * window + (1 - a) * recurrence per head, in float32 ([B, T, H, D] each)."""
        a = torch.sigmoid(self.window_factor.float())[:, None]
        return torch.lerp(recurrent_out.float(), window_out.float(), a)

    # -- attention sinks ------------------------------------------------------------------------------------------
    def sink_keys(self, kh, v1, attention_mask, key_mask, cache, position_ids, P):
        """(sinks for the kernel at the key/value heads, key mask without the sink tokens). Slot s of the sink store
        [B, Hkv, S, D + V] (head-major, as the window) holds the token at position s of its row (positions count
        real tokens, so left padding is handled): its key and its value (the new tokens' ``kh`` and ``v1``,
        head-major [B, Hkv, T, *]; LoLCATs' values carry the normaliser's column of ones); the store is the layer's
        second recurrent state in the cache."""
        B, T = kh.shape[0], kh.shape[2]
        S, D = self.sinks, self.head_dim
        pos = torch.arange(T, device=kh.device)[None] if position_ids is None else position_ids
        pos = pos.to(kh.device).expand(B, T)
        valid = new_token_mask(attention_mask, T)
        valid = torch.ones(B, T, dtype=torch.bool, device=kh.device) if valid is None else valid
        store = get_state(cache, self.layer_idx, SINK_STATE)
        if store is None:
            store = kh.new_zeros(B, self.num_kv_heads, S, D + v1.shape[-1])
        # Only the row's first sequence fills the slots: in a row packed with restarting positions a later sequence's
        # first tokens must not reach the earlier sequence's queries (a packed sequence does not get sinks of its own).
        if T > 1:  # a decode step's one token starts nothing
            seen = torch.where(valid, pos, -1).cummax(1).values
            restart = valid & (pos <= F.pad(seen[:, :-1], (1, 0), value=-1))
            valid = valid & (restart.cumsum(1) == 0)
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
