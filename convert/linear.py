"""linear: causal linear attention with phi(x) = elu(x) + 1 and its normaliser, over the attention's own q/k/v/o."""

import torch.nn.functional as F
from torch import nn

from linearize.convert.linear_mixer import LinearAttentionMixer
from linearize.convert.mixer_base import Citation


class EluFeatureMap(nn.Module):
    """phi(x) = elu(x) + 1 (Katharopoulos et al., 2020): positive, no parameters."""

    def __init__(self, num_heads, head_dim, feature_dim=None):
        super().__init__()
        self.out_dim = head_dim

    def forward(self, x):
        return F.elu(x) + 1

    def reset_linearize_parameters(self):
        pass


class EluLinearAttention(LinearAttentionMixer):
    """Linear attention with phi(x) = elu(x) + 1 and its normaliser, no new parameters."""

    target = "linear"
    feature_map = EluFeatureMap
    citations = (
        Citation(
            "Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention",
            ("Angelos Katharopoulos", "Apoorv Vyas", "Nikolaos Pappas", "François Fleuret"),
            2020,
            "ICML",
            "https://arxiv.org/abs/2006.16236",
        ),
    )
