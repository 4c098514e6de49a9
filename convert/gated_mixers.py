"""Gated recurrences built from attention: Liger-style GLA (gate from the key projection) and Gated DeltaNet."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from linearize.convert.state_cache import get_state, set_state
from linearize.convert.mixer_base import Mixer, new_token_mask, zero_where_padding
from linearize.convert.ssm_mixers import init_dt_bias
from linearize.kernels.delta_rule.dispatch import gated_delta
from linearize.kernels.linear_attn.dispatch import normalized_linear_attn


class GLAAttention(Mixer):
    """Gated linear attention whose forget gate is read off the key projection, so no parameters are
    added: g_t = logsigmoid(k_t) / gate_temperature per key dimension (GLA's per-channel gate and its
    normaliser of 16), features elu(x) + 1 on the rotated q and k, and the linear-attention normaliser.

    Lan et al., "Liger: Linearizing Large Language Models to Gated Recurrent Structures", ICML 2025;
    Yang et al., "Gated Linear Attention Transformers with Hardware-Efficient Training", ICML 2024.
    """

    target = "gla"

    def __init__(self, config, layer_idx, gate_temperature=16.0, mode="auto"):
        super().__init__(config, layer_idx, mode)
        self.gate_temperature = gate_temperature

    def settings(self):
        return {**super().settings(), "gate_temperature": self.gate_temperature}

    def state_bytes(self, batch_size=1, seq_len=0):
        return batch_size * self.num_heads * self.head_dim * (self.head_dim + 1) * 4

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        B, T, _ = hidden_states.shape
        valid = new_token_mask(attention_mask, T)
        q, k, v = self.qkv(hidden_states)
        k, v = self.repeat_kv(k, v)
        g = zero_where_padding(F.logsigmoid(k.float()) / self.gate_temperature, valid)
        cos, sin = position_embeddings
        q, k = self.apply_rotary(q, k, cos, sin, unsqueeze_dim=2)
        fq, fk = F.elu(q) + 1, zero_where_padding(F.elu(k) + 1, valid)
        o, state = normalized_linear_attn(fq, fk, v, g=g, initial_state=get_state(cache, self.layer_idx),
                                          output_final_state=cache is not None, mode=self.mode)
        set_state(cache, self.layer_idx, state)
        return self.o_proj(o.reshape(B, T, -1).to(hidden_states.dtype)), None


class GatedDeltaNetAttention(Mixer):
    """Gated delta rule on the attention's q/k/v/o (k and v repeated to the query heads, q and k
    L2-normalised), plus small new projections: beta (write strength) and the decay's a_proj with
    Mamba-style A_log and dt_bias; a per-head RMSNorm on the output.

    Yang, Kautz & Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule", ICLR 2025.
    """

    target = "gdn"

    def __init__(self, config, layer_idx, mode="auto"):
        super().__init__(config, layer_idx, mode)
        H, hidden = self.num_heads, config.hidden_size
        self.a_proj = nn.Linear(hidden, H, bias=False)
        self.b_proj = nn.Linear(hidden, H, bias=True)
        self.A_log = nn.Parameter(torch.empty(H))
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.norm_weight = nn.Parameter(torch.empty(self.head_dim))
        self.reset_linearize_parameters()

    def reset_linearize_parameters(self):
        init.zeros_(self.a_proj.weight)
        init.zeros_(self.b_proj.weight)
        init.zeros_(self.b_proj.bias)  # beta starts at 0.5
        init.copy_(self.A_log, torch.log(torch.linspace(1.0, 16.0, self.num_heads)))
        init_dt_bias(self.dt_bias)
        init.ones_(self.norm_weight)

    def state_bytes(self, batch_size=1, seq_len=0):
        return batch_size * self.num_heads * self.head_dim * self.head_dim * 4

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        B, T, _ = hidden_states.shape
        valid = new_token_mask(attention_mask, T)
        q, k, v = self.qkv(hidden_states)
        k, v = self.repeat_kv(k, v)
        q, k = F.normalize(q.float(), dim=-1), F.normalize(k.float(), dim=-1)
        beta = zero_where_padding(torch.sigmoid(self.b_proj(hidden_states).float()), valid)
        dt = F.softplus(self.a_proj(hidden_states).float() + self.dt_bias.float())
        g = zero_where_padding(-torch.exp(self.A_log.float()) * dt, valid)
        o, state = gated_delta(q, k, v, beta, g, scale=self.head_dim**-0.5,
                               initial_state=get_state(cache, self.layer_idx),
                               output_final_state=cache is not None, mode=self.mode)
        set_state(cache, self.layer_idx, state)
        o = o.float()
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * self.norm_weight.float()
        return self.o_proj(o.reshape(B, T, -1).to(hidden_states.dtype)), None
