"""Feature maps phi for linear attention, applied per head to [batch, time, heads, head_dim] tensors.

Learned maps start at the identity so that a freshly converted layer is a sensible linearisation of
the softmax attention it replaces; attention transfer then trains them.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init


def identity_like(weight):
    """Identity matrices (rectangular where feature_dim != head_dim) shaped like ``weight`` [..., D, F]."""
    eye = torch.eye(weight.shape[-2], weight.shape[-1], dtype=weight.dtype, device=weight.device)
    return eye.expand_as(weight)


def per_head(x, weight):
    """x [B, T, H, D] times each head's own weight [H, D, F]: [B, T, H, F] (a batched matmul; einsum's
    reshuffling costs more than the product itself in a decode step)."""
    return (x.transpose(1, 2) @ weight.to(x.dtype)).transpose(1, 2)


class EluFeatureMap(nn.Module):
    """phi(x) = elu(x) + 1 (Katharopoulos et al., 2020): positive, no parameters."""

    def __init__(self, num_heads, head_dim, feature_dim=None):
        super().__init__()
        self.out_dim = head_dim

    def forward(self, x):
        return F.elu(x) + 1

    def reset_linearize_parameters(self):
        pass


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


FEATURE_MAPS = {
    "elu": EluFeatureMap,
    "relu_mlp": ReluMLPFeatureMap,
    "hedgehog": HedgehogFeatureMap,
    "shared_relu": SharedReluFeatureMap,
}
