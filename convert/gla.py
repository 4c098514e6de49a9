"""gla: Liger-style gated linear attention whose forget gate is read off the key projection (no new parameters),
optionally with Liger's sliding-window softmax and attention sinks."""

import torch.nn.functional as F

from linearize.convert.mixer_base import Citation, new_token_mask, zero_where_padding
from linearize.convert.state_cache import get_state, set_state
from linearize.convert.window import WindowedMixer
from linearize.kernels.linear_attn.dispatch import normalized_linear_attn


class GLAAttention(WindowedMixer):
    """Gated linear attention whose forget gate is read off the key projection, so no parameters are
    added: g_t = logsigmoid(k_t) / gate_temperature per key dimension (GLA's per-channel gate and its
    normaliser of 16), features elu(x) + 1 on the rotated q and k, and the linear-attention normaliser.

    ``window`` / ``sinks``: Liger Attention's sliding-window softmax (``convert.window``), joined by mixing outputs
    as Liger publishes it (a * window + (1 - a) * GLA per head, a starting at 0.5; GLA over every token), not
    through the shared normaliser: GLA's gate depends on each token, so a key leaving the window would need the
    gates of the tokens it stayed in the window for to age it, which the cached window does not hold.
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

    def __init__(self, config, layer_idx, gate_temperature=16.0, window=None, sinks=None, mode="auto"):
        super().__init__(config, layer_idx, mode)
        self.gate_temperature = gate_temperature
        self.init_window(window, sinks)
        self.add_window_factor()

    def settings(self):
        return {**super().settings(), "gate_temperature": self.gate_temperature, **self.window_settings()}

    def reset_linearize_parameters(self):
        self.reset_window_parameters()

    def state_bytes(self, batch_size=1, seq_len=0):
        state = batch_size * self.num_heads * self.head_dim * (self.head_dim + 1) * 4
        return state + self.window_bytes(batch_size, self.head_dim)

    def mix(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        B, T, _ = hidden_states.shape
        valid = new_token_mask(attention_mask, T)
        q, k, v = self.qkv(hidden_states)
        g = F.logsigmoid(k.float()) / self.gate_temperature  # from the key before rotary
        q, k = self.rotate(q, k, position_embeddings, kwargs.get("step_rotation"))
        window = None
        if self.window:
            window = self.softmax_window(q, k, v, attention_mask, cache, kwargs.get("position_ids"))
        k, v, g = self.repeat_kv(k, v, g)
        g = zero_where_padding(g, valid)
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
        if self.window:
            o = self.mix_window(window, o)
        return self.o_proj(o.reshape(B, T, -1).to(hidden_states.dtype)), None
