"""gla: Liger-style gated linear attention whose forget gate is read off the key projection (no new parameters),
optionally with Liger's sliding-window softmax and attention sinks."""

import torch.nn.functional as F

from linearize.convert.mixer_base import Citation, new_token_mask, zero_where_padding
from linearize.convert.state_cache import get_state, set_state
from linearize.convert.window import WindowedMixer
from linearize.errors import SettingError
from linearize.kernels.linear_attn.dispatch import linear_attn, normalized_linear_attn

# Feature maps of the linear branch, per head on [..., head_dim]: ours, and Liger's as published.
FEATURE_MAPS = {"elu": lambda x: F.elu(x) + 1, "softmax": lambda x: F.softmax(x, dim=-1)}


class GLAAttention(WindowedMixer):
    """Gated linear attention whose forget gate is read off the key projection, so no parameters are
    added: g_t = logsigmoid(k_t) / gate_temperature per key dimension (GLA's per-channel gate and its
    normaliser of 16), features elu(x) + 1 on the rotated q and k, and the linear-attention normaliser.
    Liger's published GLA differs in three settings, each an option here: ``feature_map="softmax"`` (softmax over
    each head's dimensions), ``rotary=False`` (no rotary on the linear branch; the window keeps the teacher's) and
    ``normalize=False`` (GLA's own output, scale 1, no normaliser).

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

    def __init__(
        self,
        config,
        layer_idx,
        gate_temperature=16.0,
        feature_map="elu",
        rotary=True,
        normalize=True,
        window=None,
        sinks=None,
        mode="auto",
    ):
        super().__init__(config, layer_idx, mode)
        if feature_map not in FEATURE_MAPS:
            raise SettingError(f"bad gla feature_map {feature_map!r}: one of {', '.join(FEATURE_MAPS)}")
        self.gate_temperature = gate_temperature
        self.feature_map, self.rotary, self.normalize = feature_map, bool(rotary), bool(normalize)
        self.init_window(window, sinks)
        self.add_window_factor()

    def settings(self):
        settings = {"gate_temperature": self.gate_temperature, "feature_map": self.feature_map}
        settings.update(rotary=self.rotary, normalize=self.normalize)
        return {**super().settings(), **settings, **self.window_settings()}

    def reset_linearize_parameters(self):
        self.reset_window_parameters()

    def state_bytes(self, batch_size=1, seq_len=0):
        state = batch_size * self.num_heads * self.head_dim * (self.head_dim + self.normalize) * 4
        return state + self.window_bytes(batch_size, self.head_dim)

    def mix(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        B, T, _ = hidden_states.shape
        valid = new_token_mask(attention_mask, T)
        q, k, v = self.qkv(hidden_states)
        g = F.logsigmoid(k.float()) / self.gate_temperature  # from the key before rotary
        window = None
        if self.rotary or self.window:
            rotated = self.rotate(q, k, position_embeddings, kwargs.get("step_rotation"))
            if self.window:  # the window's softmax reads q and k as the attention did, with rotary
                window = self.softmax_window(*rotated, v, attention_mask, cache, kwargs.get("position_ids"))
            if self.rotary:
                q, k = rotated
        k, v, g = self.repeat_kv(k, v, g)
        g = zero_where_padding(g, valid)
        phi = FEATURE_MAPS[self.feature_map]
        fq, fk = phi(q), zero_where_padding(phi(k), valid)
        state = get_state(cache, self.layer_idx)
        if self.normalize:
            o, state = normalized_linear_attn(
                fq, fk, v, g=g, initial_state=state, output_final_state=cache is not None, mode=self.mode
            )
        else:
            o, state = linear_attn(
                fq, fk, v, g=g, scale=1.0, initial_state=state, output_final_state=cache is not None, mode=self.mode
            )
        set_state(cache, self.layer_idx, state)
        if self.window:
            o = self.mix_window(window, o)
        return self.o_proj(o.reshape(B, T, -1).to(hidden_states.dtype)), None
