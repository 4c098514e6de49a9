"""t2r: linear attention with a learned ReLU-MLP feature map shared by queries and keys (Transformer-to-RNN)."""

from linearize.convert.linear_mixer import LinearAttentionMixer
from linearize.convert.mixer_base import Citation


class T2RAttention(LinearAttentionMixer):
    """Linear attention with a learned ReLU-MLP feature map shared by queries and keys."""

    target = "t2r"
    feature_map = "relu_mlp"
    citations = (Citation("Finetuning Pretrained Transformers into RNNs",
                          ("Jungo Kasai", "Hao Peng", "Yizhe Zhang", "Dani Yogatama", "Gabriel Ilharco",
                           "Nikolaos Pappas", "Yi Mao", "Weizhu Chen", "Noah A. Smith"), 2021, "EMNLP",
                          "https://arxiv.org/abs/2103.13076"),)
