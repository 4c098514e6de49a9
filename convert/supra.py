"""supra: a shared trainable linear + ReLU feature map, rotary after it, RetNet's fixed per-head decays and
GroupNorm on the output in place of the normaliser (SUPRA's uptraining of a transformer into an RNN)."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from linearize.convert.linear_mixer import LinearAttentionMixer, identity_like
from linearize.convert.mixer_base import Citation


def retnet_log_decays(num_heads):
    """log(1 - 2^(-5 - h)) per head: the fixed multi-scale decays of RetNet, which SUPRA adopts."""
    return torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(num_heads, dtype=torch.float32)))


class SharedReluFeatureMap(nn.Module):
    """phi(x) = relu(x W + b), one map shared by all heads and by queries and keys (Mercat et al., 2024, SUPRA)."""

    def __init__(self, num_heads, head_dim, feature_dim=None):
        super().__init__()
        feature_dim = feature_dim or head_dim
        self.weight = nn.Parameter(torch.empty(head_dim, feature_dim))
        self.bias = nn.Parameter(torch.empty(feature_dim))
        self.out_dim = feature_dim
        self.reset_linearize_parameters()

    def forward(self, x):
        return F.relu(x @ self.weight.to(x.dtype) + self.bias.to(x.dtype))

    def reset_linearize_parameters(self):
        init.copy_(self.weight, identity_like(self.weight))
        init.zeros_(self.bias)


class SupraAttention(LinearAttentionMixer):
    """Shared trainable linear + ReLU feature map, rotary applied after it, fixed per-head (RetNet)
    decays, and GroupNorm on the output in place of the normaliser. ``window`` / ``sinks``: with no normaliser to
    share, the window's softmax mixes its output with the GroupNorm'd linear part's as Liger does (a per-head share
    starting at 0.5; the linear part over every token)."""

    target = "supra"
    feature_map = SharedReluFeatureMap
    rotary_after_feature_map = True
    fixed_decay = True
    output_norm = True
    citations = (
        Citation(
            "Linearizing Large Language Models",
            (
                "Jean Mercat",
                "Igor Vasiljevic",
                "Sedrick Keh",
                "Kushal Arora",
                "Achal Dave",
                "Adrien Gaidon",
                "Thomas Kollar",
            ),
            2024,
            "COLM",
            "https://arxiv.org/abs/2405.06640",
        ),
    )

    def fixed_log_decays(self):
        return retnet_log_decays(self.num_heads)
