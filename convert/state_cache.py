"""How a converted model keeps its mixers' state in transformers' own cache, through the cache's public calls.

``DynamicCache(config=...)`` builds one layer per ``config.layer_types`` entry; ``prepare`` swaps its
linear-attention layers (before their first use) for subclasses that fix two gaps for mixers:

- a recurrent state counts as present once written, so ``cache.get_recurrent_state`` returns it
  (transformers marks a state present only when a conv state is written, and most mixers have none);
- a layer with only a recurrent state counts its tokens, so the cache has a length: ``get_seq_length``
  works, ``generate`` continues from a returned cache instead of re-feeding the prompt into a state
  that already holds it, and ``reset``/``crop`` keep the count right.

Mixers call ``get_state``/``set_state`` for recurrent states and ``update_window`` for a sliding window's
keys and values; the model calls ``prepare`` before its layers and ``advance`` after them.
"""

from transformers.cache_utils import (
    CacheLayerMixin,
    LinearAttentionAndFullAttentionLayer,
    LinearAttentionAndSlidingWindowAttentionLayer,
    LinearAttentionLayer,
)


class _MarksWrittenState:
    step_kept = None  # what the layer's mixer reuses at every decode step of this cache (``kept_for_steps``)

    def update_recurrent_state(self, recurrent_states, state_idx=0, **kwargs):
        out = super().update_recurrent_state(recurrent_states, state_idx, **kwargs)
        self.has_previous_state[state_idx] = True
        return out

    def reset(self):
        super().reset()
        self.step_kept = None


class RecurrentLayer(_MarksWrittenState, LinearAttentionLayer, CacheLayerMixin):
    """Recurrent states only (no keys), plus the number of tokens they have absorbed."""

    is_sliding = False
    is_compileable = False  # its count is a Python int

    def __init__(self, number_of_states=1, **kwargs):
        CacheLayerMixin.__init__(self)
        LinearAttentionLayer.__init__(self, number_of_states=number_of_states)
        self.cumulative_length = 0

    def update(self, key_states, value_states, *args, **kwargs):
        raise TypeError("a recurrent cache layer holds no keys or values")

    def get_seq_length(self):
        return self.cumulative_length

    def get_mask_sizes(self, query_length):
        return self.cumulative_length + query_length, 0

    def reset(self):
        LinearAttentionLayer.reset(self)
        self.cumulative_length = 0
        self.step_kept = None

    def crop(self, tokens_to_remove):
        LinearAttentionLayer.crop(self, tokens_to_remove)
        self.cumulative_length -= abs(tokens_to_remove)


class RecurrentAndFullAttentionLayer(_MarksWrittenState, LinearAttentionAndFullAttentionLayer):
    """A recurrent state plus a growing KV cache (RecurFormer's mixed layers)."""


class RecurrentAndSlidingWindowLayer(_MarksWrittenState, LinearAttentionAndSlidingWindowAttentionLayer):
    """A recurrent state plus a sliding window of keys and values (LoLCATs-style windows)."""


def _swap(layer):
    """Ours in place of transformers' linear-attention layer ``layer`` (same settings), or None."""
    kind, states = type(layer), getattr(layer, "number_of_states", 1)
    if kind is LinearAttentionLayer:
        return RecurrentLayer(number_of_states=states)
    if kind is LinearAttentionAndFullAttentionLayer:
        return RecurrentAndFullAttentionLayer(number_of_states=states)
    if kind is LinearAttentionAndSlidingWindowAttentionLayer:
        return RecurrentAndSlidingWindowLayer(sliding_window=layer.sliding_window, number_of_states=states)
    return None


def prepare(cache):
    """Swap the cache's transformers linear-attention layers for the ones above, before their first use.
    Returns the cache."""
    if cache is None:
        return None
    for i, layer in enumerate(cache.layers):
        new = _swap(layer)
        if new is None:
            continue
        if (
            any(layer.is_recurrent_states_initialized.values())
            or any(layer.is_conv_states_initialized.values())
            or getattr(layer, "is_initialized", False)
        ):
            raise ValueError(
                f"cache layer {i} holds state written by another model: pass a fresh cache, or the "
                "one this model returned"
            )
        cache.layers[i] = new
    return cache


def advance(cache, num_tokens):
    """After a forward of ``num_tokens`` new tokens: layers without keys count them (the others count
    through their key/value updates)."""
    if cache is not None:
        for layer in cache.layers:
            if isinstance(layer, RecurrentLayer):
                layer.cumulative_length += num_tokens


def seen_tokens(cache):
    """Tokens already in the cache (0 without one)."""
    return 0 if cache is None else cache.get_seq_length()


def get_state(cache, layer_idx, state_idx=0):
    """The layer's recurrent state ``state_idx``, or None (no cache, or nothing written since the last reset)."""
    return None if cache is None else cache.get_recurrent_state(layer_idx, state_idx)


def set_state(cache, layer_idx, state, state_idx=0):
    if cache is not None:
        cache.update_recurrent_state(state, layer_idx, state_idx=state_idx)


def update_window(cache, layer_idx, keys, values):
    """Add the new keys/values, head-major [B, H, T, *] as the cache holds them, to the layer's sliding window;
    returns the window's earlier keys and values followed by the new ones, [B, H, P + T, *] (P < window), or
    (None, None) without a cache."""
    if cache is None:
        return None, None
    return cache.update(keys, values, layer_idx)


def kept_for_steps(cache, layer_idx, make, *args):
    """What a mixer's decode steps reuse (projection views, stacked map weights, constants): ``make(*args)`` at
    the first step of a cache, then kept on the cache's layer for its later steps. Weights do not change within one
    generation, and checking that they have not costs a cold decode step time in every layer; a new
    cache, or a reset one, makes it again (within one cache, in-place changes to q/k/v/o still reach the steps
    through the views; changes to feature maps, window factor or decays wait for the next cache)."""
    layer = cache.layers[layer_idx]
    kept = layer.step_kept if isinstance(layer, _MarksWrittenState) else None
    if kept is None:
        kept = make(*args)
        if isinstance(layer, _MarksWrittenState):
            layer.step_kept = kept
    return kept
