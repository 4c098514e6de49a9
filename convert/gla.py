"""gla: Liger-style gated linear attention whose forget gate is read off the key projection (no new parameters)."""

import torch.nn.functional as F

from linearize.convert.mixer_base import Citation, Mixer, new_token_mask, zero_where_padding
from linearize.convert.state_cache import get_state, set_state
from linearize.kernels.linear_attn.dispatch import normalized_linear_attn


class GLAAttention(Mixer):
    """Gated linear attention whose forget gate is read off the key projection, so no parameters are
    added: g_t = logsigmoid(k_t) / gate_temperature per key dimension (GLA's per-channel gate and its
    normaliser of 16), features elu(x) + 1 on the rotated q and k, and the linear-attention normaliser.
    """

    target = "gla"
    citations = (
        Citation(
            "Liger: Linearizing Large Language Models to Gated Recurrent Structures",
            ("Disen Lan", "Weigao Sun", "Jiaxi Hu", "Jusen Du", "Yu Cheng"),
            2025,
            "ICML",
            "https://arxiv.org/abs/2503.01496",
        ),
        Citation(
            "Gated Linear Attention Transformers with Hardware-Efficient Training",
            ("Songlin Yang", "Bailin Wang", "Yikang Shen", "Rameswar Panda", "Yoon Kim"),
            2024,
            "ICML",
            "https://arxiv.org/abs/2312.06635",
        ),
    )

    def __init__(self, config, layer_idx, gate_temperature=16.0, mode="auto"):
        super().__init__(config, layer_idx, mode)
        self.gate_temperature = gate_temperature

    def settings(self):
        return {**super().settings(), "gate_temperature": self.gate_temperature}

    def state_bytes(self, batch_size=1, seq_len=0):
        return batch_size * self.num_heads * self.head_dim * (self.head_dim + 1) * 4

    def mix(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        B, T, _ = hidden_states.shape
        valid = new_token_mask(attention_mask, T)
        q, k, v = self.qkv(hidden_states)
        k, v = self.repeat_kv(k, v)
        g = zero_where_padding(F.logsigmoid(k.float()) / self.gate_temperature, valid)
        q, k = self.rotate(q, k, position_embeddings, kwargs.get("step_rotation"))
        fq, fk = F.elu(q) + 1, zero_where_padding(F.elu(k) + 1, valid)
        o, state = normalized_linear_attn(
            fq,
            fk,
            v,
            g=g,
            initial_state=get_state(cache, self.layer_idx),
            output_final_state=cache is not None,
            mode=self.mode,
        )
        set_state(cache, self.layer_idx, state)
        return self.o_proj(o.reshape(B, T, -1).to(hidden_states.dtype)), None
