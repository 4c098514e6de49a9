"""t2r: linear attention with a learned ReLU-MLP feature map shared by queries and keys (Transformer-to-RNN)."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from linearize.convert.linear_mixer import LinearAttentionMixer, identity_like, per_head
from linearize.convert.mixer_base import Citation


class ReluMLPFeatureMap(nn.Module):
    """phi(x) = relu(x W_h + b_h), one learned map per head (Kasai et al., 2021, T2R)."""

    def __init__(self, num_heads, head_dim, feature_dim=None):
        super().__init__()
        feature_dim = feature_dim or head_dim
        self.weight = nn.Parameter(torch.empty(num_heads, head_dim, feature_dim))
        self.bias = nn.Parameter(torch.empty(num_heads, feature_dim))
        self.out_dim = feature_dim
        self.reset_linearize_parameters()

    def forward(self, x):
        return F.relu(per_head(x, self.weight) + self.bias.to(x.dtype))

    def reset_linearize_parameters(self):
        init.copy_(self.weight, identity_like(self.weight))
        init.zeros_(self.bias)


class T2RAttention(LinearAttentionMixer):
    """Linear attention with a learned ReLU-MLP feature map shared by queries and keys."""

    target = "t2r"
    feature_map = ReluMLPFeatureMap
    citations = (
        Citation(
            "Finetuning Pretrained Transformers into RNNs",
            (
                "Jungo Kasai",
                "Hao Peng",
                "Yizhe Zhang",
                "Dani Yogatama",
                "Gabriel Ilharco",
                "Nikolaos Pappas",
                "Yi Mao",
                "Weizhu Chen",
                "Noah A. Smith",
            ),
            2021,
            "EMNLP",
            "https://arxiv.org/abs/2103.13076",
        ),
    )
