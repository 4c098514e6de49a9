"""hedgehog: linear attention with Hedgehog's learned feature maps, one for queries and one for keys; a decode step
runs both maps as one batched product (``step_features``)."""

import torch
from torch import nn
from transformers import initialization as init

from linearize.convert.linear_mixer import LinearAttentionMixer, identity_like, per_head
from linearize.convert.mixer_base import Citation


def hedgehog(z):
    """[softmax(z), softmax(-z)] over z's last dim, as [..., 2, F]: both halves in one softmax call."""
    return torch.stack([z, -z], -2).softmax(-1)


class HedgehogFeatureMap(nn.Module):
    """phi(x) = [softmax(x W_h), softmax(-x W_h)], one learned map per head (Zhang et al., 2024, Hedgehog).

    The two softmaxes keep phi positive while letting it mimic the spiky, monotone dot-product
    kernel of softmax attention; the output has 2 * feature_dim dimensions.
    """

    def __init__(self, num_heads, head_dim, feature_dim=None):
        super().__init__()
        feature_dim = feature_dim or head_dim
        self.weight = nn.Parameter(torch.empty(num_heads, head_dim, feature_dim))
        self.out_dim = 2 * feature_dim
        self.reset_linearize_parameters()

    def forward(self, x):
        return hedgehog(per_head(x, self.weight)).flatten(-2)

    def reset_linearize_parameters(self):
        init.copy_(self.weight, identity_like(self.weight))


class HedgehogAttention(LinearAttentionMixer):
    """Linear attention with Hedgehog's learned feature maps (separate for queries and keys)."""

    target = "hedgehog"
    feature_map = HedgehogFeatureMap
    share_feature_map = False
    default_feature_dim = 64
    citations = (
        Citation(
            "The Hedgehog & the Porcupine: Expressive Linear Attentions with Softmax Mimicry",
            ("Michael Zhang", "Kush Bhatia", "Hermann Kumbong", "Christopher Ré"),
            2024,
            "ICLR",
            "https://arxiv.org/abs/2402.04347",
        ),
    )

    def step_map_weights(self, dtype):
        """The query and key maps' weights stacked, [2H, D, F], in ``dtype``: a copy a step reads from memory, which
        costs less than negating and stacking the two softmaxes' inputs at every step."""
        return torch.cat([self.feature_map_q.weight, self.feature_map_k.weight]).detach().to(dtype)

    def step_features(self, q, k=None, weights=None):
        """As ``LinearAttentionMixer.step_features``; with ``step_map_weights`` both maps are one batched product
        over 2H heads and one pair of softmaxes, both outputs in [B, H] order first."""
        if weights is None:
            return super().step_features(q, k)
        B, H, D = q.shape[0], q.shape[-2], q.shape[-1]
        Hkv = self.num_kv_heads
        one = B == 1  # one sequence: head-major and batch-major layouts are the same memory, and views suffice
        # [Hkv, G, B, D]: head-major, as the weights
        x = q.view(Hkv, H // Hkv, 1, D) if one else q.view(B, Hkv, H // Hkv, D).permute(1, 2, 0, 3)
        if k is None:
            z = torch.bmm(x.reshape(H, B, D), weights[:H])
        else:  # the leaving key once per query head that reads it (repeat_kv's order)
            k = k.view(Hkv, 1, 1, D) if one else k.permute(1, 2, 0, 3)
            z = torch.bmm(torch.cat([x, k.expand_as(x)]).view(2 * H, B, D), weights)
        f = hedgehog(z)  # [H or 2H, B, 2, F]
        if not one:
            f = f.transpose(0, 1)
            return (f, None) if k is None else (f[:, :H], f[:, H:])
        return (f, None) if k is None else (f[:H], f[H:])
