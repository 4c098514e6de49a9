"""mamba: a Mamba-2 (SSD) layer initialised from attention (MambaInLlama), exactly transformers' GraniteMoeHybrid
Mamba-2 layer, optionally with a sliding-window softmax and attention sinks (which GraniteMoeHybrid has no form for).
Mamba-2's scan is linear attention with a per-head decay (``kernels.ssd``)."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from linearize.convert.mixer_base import (
    Citation,
    causal_conv,
    init_A_log,
    init_dt_bias,
    init_identity_conv,
    new_token_mask,
    zero_where_padding,
)
from linearize.convert.state_cache import get_state, set_state
from linearize.convert.window import WindowedMixer
from linearize.kernels.ssd.dispatch import ssd


class MambaMixer(WindowedMixer):
    """A Mamba-2 (SSD) layer initialised from attention: C <- q_proj, B <- k_proj, x <- v_proj and
    out_proj <- o_proj, keeping GQA (B and x grouped per KV head); new: the dt projection, A_log, D,
    a short causal depthwise convolution over [C, B, x] and a gated RMSNorm on the output (per head, with
    epsilon ``norm_eps``, by default the base's ``rms_norm_eps``: so the layer is exactly transformers'
    GraniteMoeHybrid Mamba-2 layer, which ``convert.export_native`` writes it as).

    ``window`` / ``sinks``: the teacher's softmax over the last ``window`` tokens (q, k, v with rotary, as the
    attention computed them) and the first ``sinks`` tokens (``convert.window``), joined by mixing outputs as Liger
    does: the scan has no normaliser to share, so output = a * window + (1 - a) * the gated-norm scan output per
    head, a starting at 0.5; the scan runs over every token. Such a layer has no GraniteMoeHybrid form.
    """

    target = "mamba"
    citations = (
        Citation(
            "The Mamba in the Llama: Distilling and Accelerating Hybrid Models",
            ("Junxiong Wang", "Daniele Paliotta", "Avner May", "Alexander M. Rush", "Tri Dao"),
            2024,
            "NeurIPS",
            "https://arxiv.org/abs/2408.15237",
        ),
        Citation(
            "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space Duality",
            ("Tri Dao", "Albert Gu"),
            2024,
            "ICML",
            "https://arxiv.org/abs/2405.21060",
        ),
    )

    def __init__(
        self, config, layer_idx, conv_kernel=4, gate=True, norm_eps=None, window=None, sinks=None, mode="auto"
    ):
        super().__init__(config, layer_idx, mode)
        self.init_window(window, sinks)
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
        self.add_window_factor()
        self.reset_linearize_parameters()

    def settings(self):
        settings = {"conv_kernel": self.conv_kernel, "gate": self.gate, "norm_eps": self.norm_eps}
        return {**super().settings(), **settings, **self.window_settings()}

    def reset_linearize_parameters(self):
        init.zeros_(self.dt_proj.weight)  # dt starts at dt_bias, a spread of time scales per head
        init_dt_bias(self.dt_bias)
        init_A_log(self.A_log)
        init.ones_(self.D)
        if self.conv_kernel:
            init_identity_conv(self.conv_weight)  # at init the convolution passes q/k/v through
            init.zeros_(self.conv_bias)
        if self.gate:
            init.normal_(self.z_proj.weight, std=0.02)
            init.ones_(self.norm_weight)
        self.reset_window_parameters()

    def state_bytes(self, batch_size=1, seq_len=0):
        ssm = batch_size * self.num_heads * self.head_dim * self.head_dim * 4
        conv = batch_size * self.conv_channels * self.conv_kernel * self.q_proj.weight.element_size()
        return ssm + conv + self.window_bytes(batch_size, self.head_dim)

    def project(self, hidden_states, qkv=None):
        """[C, B, x] = the q/k/v projections (with their biases), [B, T, (H + 2 Hkv) D] (``qkv``: them, made)."""
        return torch.cat([t.flatten(2) for t in qkv or self.qkv(hidden_states)], -1)

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

    def mix(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        Bsz, T, _ = hidden_states.shape
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        valid = new_token_mask(attention_mask, T)
        qkv = self.qkv(hidden_states)
        window = None
        if self.window:  # the softmax part reads the projections as the attention did: rotary on q and k
            q, k = self.rotate(*qkv[:2], position_embeddings, kwargs.get("step_rotation"))
            window = self.softmax_window(q, k, qkv[2], attention_mask, cache, kwargs.get("position_ids"))
        xbc = self.project(hidden_states, qkv)
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
        y, state = ssd(C, Bm, x, dt, self.A_log, self.D, get_state(cache, self.layer_idx), cache is not None, self.mode)
        if self.gate:
            z = self.z_proj(hidden_states).view(Bsz, T, H, D)
            y = y.float() * F.silu(z.float())
            y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.norm_eps) * self.norm_weight.float().view(H, D)
        set_state(cache, self.layer_idx, state)
        if self.window:
            y = self.mix_window(window, y)
        return self.o_proj(y.reshape(Bsz, T, H * D).to(hidden_states.dtype)), None
