"""linear: causal linear attention with phi(x) = elu(x) + 1 and its normaliser, over the attention's own q/k/v/o."""

from linearize.convert.linear_mixer import LinearAttentionMixer
from linearize.convert.mixer_base import Citation


class EluLinearAttention(LinearAttentionMixer):
    """Linear attention with phi(x) = elu(x) + 1 and its normaliser, no new parameters."""

    target = "linear"
    feature_map = "elu"
    citations = (Citation("Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention",
                          ("Angelos Katharopoulos", "Apoorv Vyas", "Nikolaos Pappas", "François Fleuret"), 2020,
                          "ICML", "https://arxiv.org/abs/2006.16236"),)
