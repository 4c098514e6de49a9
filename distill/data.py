"""Training data: the blocks distillation trains on, cut by ``data.packing`` (the documents, held-out split
and packing evaluation uses too), in a seeded order."""

import random

from linearize.data.packing import HELDOUT_FRACTION, text_ids, windows
from linearize.data.texts import DataError


def build_blocks(spec, tokenizer, seq_len=512, heldout_fraction=HELDOUT_FRACTION, seed=0, max_train_tokens=None):
    """(train [N, seq_len] in an order ``seed`` shuffles, heldout [M, seq_len]). The split is by document,
    before packing, and the same for every seed (``data.packing.SPLIT_SEED``), so no held-out token is ever in
    a training block, and the held-out blocks are the windows ``linearize eval`` and the main job measure."""
    train = windows(text_ids(tokenizer, spec, "train", heldout_fraction), seq_len)
    if len(train) == 0:
        raise DataError(f"{str(spec or 'default')!r} gives no training block of {seq_len} tokens")
    held = windows(text_ids(tokenizer, spec, "heldout", heldout_fraction), seq_len)
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    train = train[order]
    if max_train_tokens is not None:
        train = train[: max(1, max_train_tokens // seq_len)]
    return train, held
