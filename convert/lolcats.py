"""lolcats: Hedgehog feature maps plus softmax attention over a sliding window, in one shared normaliser."""

from linearize.convert.hedgehog import HedgehogAttention
from linearize.convert.mixer_base import Citation


class LoLCATsAttention(HedgehogAttention):
    """Hedgehog feature maps plus softmax attention over a sliding window of 64 tokens, mixed per head
    by a learned factor in one shared normaliser. Its cache layer holds the window beside the linear state."""

    target = "lolcats"
    default_window = 64
    cache_layer = "hybrid_sliding"
    citations = (
        Citation(
            "LoLCATs: On Low-Rank Linearizing of Large Language Models",
            (
                "Michael Zhang",
                "Simran Arora",
                "Rahul Chalamala",
                "Alan Wu",
                "Benjamin Spector",
                "Aaryan Singhal",
                "Krithik Ramesh",
                "Christopher Ré",
            ),
            2025,
            "ICLR",
            "https://arxiv.org/abs/2410.10254",
        ),
    )
