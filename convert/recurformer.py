"""recurformer: a per-head hybrid: heads whose attention stays near the query become Mamba-2 heads on their own
q/k/v slices, the other heads stay softmax attention over a KV cache of just the KV heads they read."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from linearize.convert.mixer_base import Citation, Mixer, init_A_log, init_dt_bias, new_token_mask, zero_where_padding
from linearize.convert.state_cache import get_state, set_state
from linearize.kernels.ssd.dispatch import ssd


class RecurFormerAttention(Mixer):
    """Per-head hybrid: heads whose attention stays near the query (high recency) become Mamba heads fed
    by their own q/k/v slices (C, B, x); the other heads stay softmax attention and keep a KV cache for
    just the KV heads they use. The plan (``mamba_heads``) comes from ``convert.calibration``.
    """

    target = "recurformer"
    cache_layer = "hybrid"  # the Mamba heads' state plus the softmax heads' growing KV cache
    citations = (
        Citation(
            "RecurFormer: Not All Transformer Heads Need Self-Attention",
            ("Ruiqing Yan", "Linghan Zheng", "Xingbo Du", "Han Zou", "Yufeng Guo", "Jianfei Yang"),
            2024,
            "arXiv",
            "https://arxiv.org/abs/2410.12850",
        ),
    )

    def __init__(self, config, layer_idx, mamba_heads=(), mode="auto"):
        super().__init__(config, layer_idx, mode)
        self.mamba_heads = sorted(int(h) for h in mamba_heads)
        if not self.mamba_heads or any(not 0 <= h < self.num_heads for h in self.mamba_heads):
            raise ValueError(
                f"recurformer layer {layer_idx}: mamba_heads must be a non-empty subset of 0..{self.num_heads - 1}"
            )
        groups = self.num_heads // self.num_kv_heads
        self.attn_heads = [h for h in range(self.num_heads) if h not in self.mamba_heads]
        self.kv_heads = sorted({h // groups for h in self.attn_heads})  # cached KV heads
        n = len(self.mamba_heads)
        self.dt_proj = nn.Linear(config.hidden_size, n, bias=False)
        self.dt_bias = nn.Parameter(torch.empty(n))
        self.A_log = nn.Parameter(torch.empty(n))
        self.D = nn.Parameter(torch.empty(n))
        self.reset_linearize_parameters()

    def settings(self):
        return {**super().settings(), "mamba_heads": self.mamba_heads}

    def cache_layout(self):
        """Every head a Mamba head: the state alone."""
        return ("hybrid" if self.attn_heads else "linear_attention"), {}

    def reset_linearize_parameters(self):
        init.zeros_(self.dt_proj.weight)
        init_dt_bias(self.dt_bias)
        init_A_log(self.A_log)
        init.zeros_(self.D)

    def state_bytes(self, batch_size=1, seq_len=0):
        ssm = batch_size * len(self.mamba_heads) * self.head_dim * self.head_dim * 4
        kv = 2 * batch_size * seq_len * len(self.kv_heads) * self.head_dim * self.q_proj.weight.element_size()
        return ssm + kv

    def mix(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        Bsz, T, _ = hidden_states.shape
        groups = self.num_heads // self.num_kv_heads
        valid = new_token_mask(attention_mask, T)
        q, k, v = self.qkv(hidden_states)
        out = q.new_zeros(Bsz, T, self.num_heads, self.head_dim)
        # Mamba heads: C, B, x are the head's own query, key and value (no rotary, as in Mamba).
        mh = self.mamba_heads
        kv_idx = [h // groups for h in mh]
        dt = zero_where_padding(F.softplus(self.dt_proj(hidden_states).float() + self.dt_bias.float()), valid)
        y, state = ssd(
            q[:, :, mh],
            k[:, :, kv_idx],
            v[:, :, kv_idx],
            dt,
            self.A_log,
            self.D,
            get_state(cache, self.layer_idx),
            cache is not None,
            self.mode,
        )
        out[:, :, mh] = y.to(out.dtype)
        set_state(cache, self.layer_idx, state)
        if self.attn_heads:
            out[:, :, self.attn_heads] = self.attend(q, k, v, position_embeddings, attention_mask, cache).to(out.dtype)
        return self.o_proj(out.reshape(Bsz, T, -1)), None

    def attend(self, q, k, v, position_embeddings, attention_mask, cache):
        """Causal softmax attention of the kept heads over their KV heads (cached in the hybrid layer)."""
        groups = self.num_heads // self.num_kv_heads
        cos, sin = position_embeddings
        qa, ka = self.apply_rotary(q[:, :, self.attn_heads], k[:, :, self.kv_heads], cos, sin, unsqueeze_dim=2)
        qa, ka, va = qa.transpose(1, 2), ka.transpose(1, 2), v[:, :, self.kv_heads].transpose(1, 2)
        if cache is not None:
            ka, va = cache.update(ka, va, self.layer_idx)
        slot = torch.tensor([self.kv_heads.index(h // groups) for h in self.attn_heads], device=q.device)
        ka, va = ka[:, slot], va[:, slot]
        T, L = qa.shape[2], ka.shape[2]
        allowed = torch.ones(T, L, dtype=torch.bool, device=q.device).tril(L - T)[None, None]
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, None, -L:].bool()
            allowed = allowed | ~allowed.any(-1, keepdim=True)  # padded queries: finite garbage, not NaN
        o = F.scaled_dot_product_attention(qa, ka, va, attn_mask=allowed, scale=self.head_dim**-0.5)
        return o.transpose(1, 2)
