"""State-space mixers built from attention: Mamba-2 layers (MambaInLlama) and per-head RecurFormer hybrids.

Both run Mamba-2's SSD scan (``kernels.ssd``), which is linear attention with a per-head decay.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from linearize.convert.state_cache import get_state, set_state
from linearize.convert.mixer_base import Mixer, causal_conv, new_token_mask, zero_where_padding
from linearize.kernels.ssd.dispatch import ssd


def init_dt_bias(dt_bias, dt_min=1e-3, dt_max=1e-1):
    """dt_bias = softplus^-1(dt) with dt spread geometrically over [dt_min, dt_max] across heads (Mamba's range)."""
    dt = torch.exp(torch.linspace(math.log(dt_min), math.log(dt_max), dt_bias.numel()))
    init.copy_(dt_bias, dt + torch.log(-torch.expm1(-dt)))


class MambaMixer(Mixer):
    """A Mamba-2 (SSD) layer initialised from attention: C <- q_proj, B <- k_proj, x <- v_proj and
    out_proj <- o_proj, keeping GQA (B and x grouped per KV head); new: the dt projection, A_log, D,
    a short causal depthwise convolution over [C, B, x] and a gated RMSNorm on the output (per head, with
    epsilon ``norm_eps``, by default the base's ``rms_norm_eps``: so the layer is exactly transformers'
    GraniteMoeHybrid Mamba-2 layer, which ``convert.export_native`` writes it as).

    Wang et al., "The Mamba in the Llama: Distilling and Accelerating Hybrid Models", NeurIPS 2024;
    Dao & Gu, "Transformers are SSMs" (Mamba-2), ICML 2024.
    """

    target = "mamba"

    def __init__(self, config, layer_idx, conv_kernel=4, gate=True, norm_eps=None, mode="auto"):
        super().__init__(config, layer_idx, mode)
        H, Hkv, D, hidden = self.num_heads, self.num_kv_heads, self.head_dim, config.hidden_size
        self.conv_kernel = conv_kernel
        self.gate = gate
        self.norm_eps = float(config.rms_norm_eps if norm_eps is None else norm_eps)
        self.dt_proj = nn.Linear(hidden, H, bias=False)
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.A_log = nn.Parameter(torch.empty(H))
        self.D = nn.Parameter(torch.empty(H))
        self.conv_channels = (H + 2 * Hkv) * D  # C, B, x
        if conv_kernel:
            self.conv_weight = nn.Parameter(torch.empty(self.conv_channels, conv_kernel))
            self.conv_bias = nn.Parameter(torch.empty(self.conv_channels))
        if gate:
            self.z_proj = nn.Linear(hidden, H * D, bias=False)
            self.norm_weight = nn.Parameter(torch.empty(H * D))
        self.reset_linearize_parameters()

    def settings(self):
        return {**super().settings(), "conv_kernel": self.conv_kernel, "gate": self.gate, "norm_eps": self.norm_eps}

    def reset_linearize_parameters(self):
        init.zeros_(self.dt_proj.weight)  # dt starts at dt_bias, a spread of time scales per head
        init_dt_bias(self.dt_bias)
        init.copy_(self.A_log, torch.log(torch.linspace(1.0, 16.0, self.num_heads)))
        init.ones_(self.D)
        if self.conv_kernel:
            # Identity (the current token's tap = 1): at init the convolution passes q/k/v through.
            init.copy_(self.conv_weight, F.one_hot(torch.full((self.conv_channels,), self.conv_kernel - 1),
                                                   self.conv_kernel).float())
            init.zeros_(self.conv_bias)
        if self.gate:
            init.normal_(self.z_proj.weight, std=0.02)
            init.ones_(self.norm_weight)

    def state_bytes(self, batch_size=1, seq_len=0):
        ssm = batch_size * self.num_heads * self.head_dim * self.head_dim * 4
        conv = batch_size * self.conv_channels * self.conv_kernel * self.q_proj.weight.element_size()
        return ssm + conv

    def project(self, hidden_states):
        """[C, B, x] = the q/k/v projections (with their biases), [B, T, (H + 2 Hkv) D]."""
        return torch.cat([t.flatten(2) for t in self.qkv(hidden_states)], -1)

    def relative_to_zero_state(self, xbc):
        """(xbc - p0, the convolution's bias), p0 the projection of a zero hidden state (the q/k/v biases).

        Padded positions and those before the sequence count as zero hidden states, so their conv inputs are p0,
        not 0: the conv runs on xbc - p0 (zero history) and p0's share, p0 * sum(taps), joins its bias. That is
        the conv of the biased projections from the K-th token on, and at every token at init (identity tap); and
        it is what GraniteMoeHybrid computes (it zeroes padded hidden states before its input projection) with
        that projection unbiased and this bias as its conv's (``convert.export_native``), so left padding is exact
        there too. p0 comes from calling the projections, so LoRA wrappers and ZeRO-3 gathering apply."""
        bias = self.conv_bias
        if not any(getattr(getattr(self, n), "bias", None) is not None for n in ("q_proj", "k_proj", "v_proj")):
            return xbc, bias  # p0 = 0 (Qwen3's q/k norms map 0 to 0)
        p0 = self.project(xbc.new_zeros(1, 1, self.config.hidden_size))
        bias = bias.float() + self.conv_weight.float().sum(-1) * p0.view(-1).float()
        return xbc - p0, bias

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        Bsz, T, _ = hidden_states.shape
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        valid = new_token_mask(attention_mask, T)
        xbc = self.project(hidden_states)
        if self.conv_kernel:
            xbc, bias = self.relative_to_zero_state(xbc)
            xbc = F.silu(causal_conv(zero_where_padding(xbc, valid), self.conv_weight, bias, cache, self.layer_idx))
        else:
            xbc = zero_where_padding(xbc, valid)
        C, Bm, x = torch.split(xbc, [H * D, Hkv * D, Hkv * D], dim=-1)
        Bm, x = self.repeat_kv(Bm.view(Bsz, T, Hkv, D), x.view(Bsz, T, Hkv, D))
        C = C.view(Bsz, T, H, D)
        dt = F.softplus(self.dt_proj(hidden_states).float() + self.dt_bias.float())
        dt = zero_where_padding(dt, valid)  # a padded step neither writes nor decays the state
        y, state = ssd(C, Bm, x, dt, self.A_log, self.D, get_state(cache, self.layer_idx),
                       cache is not None, self.mode)
        if self.gate:
            z = self.z_proj(hidden_states).view(Bsz, T, H, D)
            y = (y.float() * F.silu(z.float()))
            y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.norm_eps) * self.norm_weight.float().view(H, D)
        set_state(cache, self.layer_idx, state)
        return self.o_proj(y.reshape(Bsz, T, H * D).to(hidden_states.dtype)), None



class RecurFormerAttention(Mixer):
    """Per-head hybrid: heads whose attention stays near the query (high recency) become Mamba heads fed
    by their own q/k/v slices (C, B, x); the other heads stay softmax attention and keep a KV cache for
    just the KV heads they use. The plan (``mamba_heads``) comes from ``convert.calibration``.

    Yan et al., "RecurFormer: Not All Transformer Heads Need Self-Attention", 2024.
    """

    target = "recurformer"

    def __init__(self, config, layer_idx, mamba_heads=(), mode="auto"):
        super().__init__(config, layer_idx, mode)
        self.mamba_heads = sorted(int(h) for h in mamba_heads)
        if not self.mamba_heads or any(not 0 <= h < self.num_heads for h in self.mamba_heads):
            raise ValueError(f"recurformer layer {layer_idx}: mamba_heads must be a non-empty subset of 0..{self.num_heads - 1}")
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

    def reset_linearize_parameters(self):
        init.zeros_(self.dt_proj.weight)
        init_dt_bias(self.dt_bias)
        init.copy_(self.A_log, torch.log(torch.linspace(1.0, 16.0, len(self.mamba_heads))))
        init.zeros_(self.D)

    def state_bytes(self, batch_size=1, seq_len=0):
        ssm = batch_size * len(self.mamba_heads) * self.head_dim * self.head_dim * 4
        kv = 2 * batch_size * seq_len * len(self.kv_heads) * self.head_dim * self.q_proj.weight.element_size()
        return ssm + kv

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        Bsz, T, _ = hidden_states.shape
        groups = self.num_heads // self.num_kv_heads
        valid = new_token_mask(attention_mask, T)
        q, k, v = self.qkv(hidden_states)
        out = q.new_zeros(Bsz, T, self.num_heads, self.head_dim)
        # Mamba heads: C, B, x are the head's own query, key and value (no rotary, as in Mamba).
        mh = self.mamba_heads
        kv_idx = [h // groups for h in mh]
        dt = zero_where_padding(F.softplus(self.dt_proj(hidden_states).float() + self.dt_bias.float()), valid)
        y, state = ssd(q[:, :, mh], k[:, :, kv_idx], v[:, :, kv_idx], dt, self.A_log, self.D,
                       get_state(cache, self.layer_idx), cache is not None, self.mode)
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
