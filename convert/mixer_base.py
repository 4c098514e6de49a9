"""What every mixer shares: it adopts the replaced attention's projections, records its settings, and
reports its new parameters and its decode-state size."""

import torch
from torch import nn

from linearize.convert.families import family, head_dim

# The replaced attention's submodules a mixer keeps, under the same names (so base weights load by name).
ADOPTED = ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")


class SettingError(ValueError):
    """A conversion setting out of range; the message is the one line the CLI prints."""


SINK_STATE = 1  # a windowed mixer's attention-sink keys/values live in its cache layer's second state


def new_token_mask(attention_mask, T):
    """The 2D padding mask's entries for the T new tokens (bool), or None."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2:
        raise ValueError("linearize mixers take the 2D padding mask, not a 4D attention mask")
    return attention_mask[:, -T:].bool()


def zero_where_padding(x, valid):
    """x [B, T, ...] with padded positions set to 0 (where(), not a product, so NaNs cannot leak)."""
    if valid is None:
        return x
    return torch.where(valid.view(*valid.shape, *([1] * (x.dim() - 2))), x, torch.zeros_like(x))


class Mixer(nn.Module):
    """Base of all mixers: q/k/v/o (and Qwen3's q/k norms) are the family attention's own modules."""

    target = None

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

    @classmethod
    def from_attention(cls, attention, config, layer_idx, **settings):
        """Build the mixer around an attention module's own projections (weights shared, not copied)."""
        mixer = cls(config, layer_idx, **settings)
        for name in ADOPTED:
            if getattr(attention, name, None) is not None:
                setattr(mixer, name, getattr(attention, name))
        return mixer

    def settings(self):
        """What the checkpoint's config records to rebuild this mixer (``target`` plus options)."""
        return {"target": self.target}

    def new_parameter_names(self):
        """Names (relative to this module) of the parameters the conversion added."""
        return [n for n, _ in self.named_parameters() if n.split(".")[0] not in ADOPTED]

    def reset_linearize_parameters(self):
        """Initialise the parameters the conversion adds (transformers' init must not touch q/k/v/o)."""

    def state_bytes(self, batch_size=1, seq_len=0):
        """Bytes of this layer's decode state after ``seq_len`` tokens."""
        raise NotImplementedError

    def qkv(self, hidden_states):
        """q [B, T, H, D], k and v [B, T, Hkv, D], after Qwen3's q/k norms where present."""
        B, T, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(hidden_states).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(hidden_states).view(B, T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    def repeat_kv(self, *xs):
        """Repeat KV-head tensors [B, T, Hkv, *] to the query heads (GQA)."""
        groups = self.num_heads // self.num_kv_heads
        return tuple(x.repeat_interleave(groups, dim=2) if groups > 1 else x for x in xs)
