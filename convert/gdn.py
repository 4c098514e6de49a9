"""gdn: Gated DeltaNet on the attention's q/k/v/o, laid out as transformers' Qwen3-Next linear-attention layer,
optionally with a sliding-window softmax and attention sinks (which Qwen3-Next has no form for)."""

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
from linearize.errors import SettingError
from linearize.kernels.delta_rule.dispatch import gated_delta


class GatedDeltaNetAttention(WindowedMixer):
    """Gated DeltaNet on the attention's q/k/v/o, laid out as transformers' Qwen3-Next linear-attention layer
    (so ``convert.export_native`` writes it as one by renaming and repeating weights):

    - q, k, v from the attention's projections (on Qwen3, q and k scaled by the q/k norms' weights: see below);
    - a short causal depthwise convolution over q|k|v (``conv_kernel`` taps, no bias) and SiLU; its state
      is kept in the cache's conv state;
    - k and v repeated from the KV heads to the query heads, q and k L2-normalised (``x / sqrt(|x|^2 + 1e-6)``,
      the host's form), the delta rule scaled by head_dim**-0.5;
    - beta = sigmoid(b_proj(x)) and decay g = -exp(A_log) * softplus(a_proj(x) + dt_bias), both projections
      without bias (the host's in_proj_ba has none);
    - the output: a per-head RMSNorm (epsilon ``norm_eps``, by default the base's ``rms_norm_eps``, as the
      host's) with weight ``norm_weight``, then times silu(z_proj(x)) (``gate``), then o_proj.

    Init: the convolution is the identity (current-token tap 1, as Mamba's), a_proj and b_proj zero (beta
    0.5). The gate has no bias in the host, so silu(z) cannot start at a constant: z_proj starts at N(0, 0.02)
    as Mamba's does, so a fresh layer's output is small next to the attention's and not yet
    aligned with it; the attention-transfer stage learns it. Qwen3's q/k norms: an RMSNorm is not linear, so
    it cannot sit before the convolution as the host's layer needs; only its weight is kept (a per-channel
    scale, folded into the projection on export), and the RMS division it drops is a per-head scale, which
    the L2 norm would remove without the convolution.

    ``conv_kernel=0`` and ``gate=False`` give the layer without convolution (nor SiLU) and without gate;
    such layers have no Qwen3-Next form.

    ``window`` / ``sinks``: the teacher's softmax over the last ``window`` tokens (q, k, v with Qwen3's q/k norms and
    rotary, as the attention computed them) and the first ``sinks`` tokens (``convert.window``), joined by mixing
    outputs as Liger does: the delta rule has no normaliser to share, so output = a * window + (1 - a) * the
    normed, gated delta-rule output per head, a starting at 0.5; the delta rule runs over every token. Such a layer
    has no Qwen3-Next form.
    """

    target = "gdn"
    citations = (
        Citation(
            "Gated Delta Networks: Improving Mamba2 with Delta Rule",
            ("Songlin Yang", "Jan Kautz", "Ali Hatamizadeh"),
            2025,
            "ICLR",
            "https://arxiv.org/abs/2412.06464",
        ),
        Citation(
            "Qwen3-Next", ("Qwen Team",), 2025, "", "https://huggingface.co/docs/transformers/model_doc/qwen3_next"
        ),
    )

    def __init__(
        self, config, layer_idx, conv_kernel=4, gate=True, norm_eps=None, window=None, sinks=None, mode="auto"
    ):
        super().__init__(config, layer_idx, mode)
        self.init_window(window, sinks)
        H, Hkv, D, hidden = self.num_heads, self.num_kv_heads, self.head_dim, config.hidden_size
        if isinstance(conv_kernel, bool) or not isinstance(conv_kernel, int) or conv_kernel < 0:
            raise SettingError(f"bad conv_kernel {conv_kernel!r}: a whole number of taps >= 0 (0: no convolution)")
        self.conv_kernel = conv_kernel
        self.gate = bool(gate)
        self.norm_eps = float(config.rms_norm_eps if norm_eps is None else norm_eps)
        self.a_proj = nn.Linear(hidden, H, bias=False)
        self.b_proj = nn.Linear(hidden, H, bias=False)
        self.A_log = nn.Parameter(torch.empty(H))
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.norm_weight = nn.Parameter(torch.empty(D))
        self.conv_channels = (H + 2 * Hkv) * D  # q, k, v (k and v before their repeat to the query heads)
        if self.conv_kernel:
            self.conv_weight = nn.Parameter(torch.empty(self.conv_channels, self.conv_kernel))
        if self.gate:
            self.z_proj = nn.Linear(hidden, H * D, bias=False)
        self.add_window_factor()
        self.reset_linearize_parameters()

    def settings(self):
        settings = {"conv_kernel": self.conv_kernel, "gate": self.gate, "norm_eps": self.norm_eps}
        return {**super().settings(), **settings, **self.window_settings()}

    def reset_linearize_parameters(self):
        init.zeros_(self.a_proj.weight)
        init.zeros_(self.b_proj.weight)  # beta starts at 0.5
        init_A_log(self.A_log)
        init_dt_bias(self.dt_bias)
        init.ones_(self.norm_weight)
        if self.conv_kernel:
            init_identity_conv(self.conv_weight)
        if self.gate:
            init.normal_(self.z_proj.weight, std=0.02)
        self.reset_window_parameters()

    def state_bytes(self, batch_size=1, seq_len=0):
        conv = batch_size * self.conv_channels * self.conv_kernel * self.q_proj.weight.element_size()
        state = batch_size * self.num_heads * self.head_dim * self.head_dim * 4
        return state + conv + self.window_bytes(batch_size, self.head_dim)

    def projections(self, hidden_states):
        """q [B, T, H, D], k and v [B, T, Hkv, D], the attention's projections before Qwen3's q/k norms."""
        B, T, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(hidden_states).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(hidden_states).view(B, T, self.num_kv_heads, self.head_dim)
        return q, k, v

    def mix(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        B, T, _ = hidden_states.shape
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        valid = new_token_mask(attention_mask, T)
        q, k, v = self.projections(hidden_states)
        window = None
        if self.window:  # the softmax part reads q and k as the attention did: Qwen3's q/k norms, rotary
            qw, kw = (q, k) if self.q_norm is None else (self.q_norm(q), self.k_norm(k))
            qw, kw = self.rotate(qw, kw, position_embeddings, kwargs.get("step_rotation"))
            window = self.softmax_window(qw, kw, v, attention_mask, cache, kwargs.get("position_ids"))
        if self.q_norm is not None:  # the delta rule's: linear in the input, the norms' weights only (see above)
            q, k = q * self.q_norm.weight.to(q.dtype), k * self.k_norm.weight.to(k.dtype)
        if self.conv_kernel:
            qkv = zero_where_padding(torch.cat([q.flatten(2), k.flatten(2), v.flatten(2)], -1), valid)
            qkv = F.silu(causal_conv(qkv, self.conv_weight, None, cache, self.layer_idx))
            q, k, v = torch.split(qkv, [H * D, Hkv * D, Hkv * D], dim=-1)
            q, k, v = q.view(B, T, H, D), k.view(B, T, Hkv, D), v.view(B, T, Hkv, D)
        k, v = self.repeat_kv(k, v)
        q, k = l2norm(q.float()), l2norm(k.float())
        beta = zero_where_padding(torch.sigmoid(self.b_proj(hidden_states).float()), valid)
        dt = F.softplus(self.a_proj(hidden_states).float() + self.dt_bias.float())
        g = zero_where_padding(-torch.exp(self.A_log.float()) * dt, valid)
        o, state = gated_delta(
            q,
            k,
            v,
            beta,
            g,
            scale=D**-0.5,
            initial_state=get_state(cache, self.layer_idx),
            output_final_state=cache is not None,
            mode=self.mode,
        )
        set_state(cache, self.layer_idx, state)
        o = o.float()
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + self.norm_eps) * self.norm_weight.float()
        if self.gate:
            o = o * F.silu(self.z_proj(hidden_states).float().view(B, T, H, D))
        if self.window:
            o = self.mix_window(window, o)
        return self.o_proj(o.reshape(B, T, -1).to(hidden_states.dtype)), None


def l2norm(x, eps=1e-6):
    """x / sqrt(|x|^2 + eps) over the last dimension (fla's and transformers' Qwen3-Next form)."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)
