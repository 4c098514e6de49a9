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


# Retrieval exercises (issue 22's "distillation data that asks for retrieval"): a share of the training blocks
# carry facts at seeded depths of their own text and end by asking for them, so the KL at the answers teaches the
# student to copy from far back. Keys, values and wording are apart from the recall evaluation's (evals.recall:
# adjective-noun keys, "special magic" needles, passkeys) and from conversion's ranking probes (convert.calibration).
_PLACES = ("locker", "room", "cabinet", "crate", "gate", "shelf", "bay", "dock", "box", "track", "unit", "row")
_FACTS = ("The code for {k} is {v}.", "Code for {k}: {v}.", "Remember that {k} has the code {v}.")
_ASKS = ("Q: What is the code for {k}? A: {v}", "The code for {k} was {v}.")
EXERCISE_FACTS = 3


def _exercise_value(rng):
    if rng.random() < 0.5:
        digits = rng.randint(4, 8)
        return str(rng.randrange(10 ** (digits - 1), 10**digits))
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    return "".join(rng.choice(letters) for _ in range(2)) + "-" + str(rng.randrange(1000, 10000))


def retrieval_exercise(block, tokenizer, rng, facts=EXERCISE_FACTS):
    """``block`` (token ids of ordinary text) turned into a retrieval exercise of the same length: ``facts``
    key-value facts at seeded depths of the text's first 80%, then a question for each, in another order, with
    its answer. None when the block is too short to hold them with 32 tokens of text."""
    enc = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    keys = rng.sample([f"{p} {n}" for p in _PLACES for n in range(2, 100)], facts)
    values = [_exercise_value(rng) for _ in keys]
    stated = [enc(" " + rng.choice(_FACTS).format(k=k, v=v)) for k, v in zip(keys, values)]
    order = rng.sample(range(facts), facts)
    asked = [enc("\n" + rng.choice(_ASKS).format(k=keys[i], v=values[i])) for i in order]
    text = len(block) - sum(map(len, stated)) - sum(map(len, asked))
    if text < 32:
        return None
    filler = list(block[:text])
    # Facts go before a token that starts a word (byte-level BPE's "Ġ"/"Ċ", sentencepiece's "▁"), not inside one.
    words = [i for i, t in enumerate(tokenizer.convert_ids_to_tokens(filler)) if t[:1] in "ĠĊ▁ \n"]
    words = [i for i in words if i <= text * 4 // 5] or list(range(text * 4 // 5 + 1))
    depths = sorted(rng.choice(words) for _ in range(facts))
    ids, at = [], 0
    for depth, fact in zip(depths, stated):
        ids += filler[at:depth] + fact
        at = depth
    ids += filler[at:] + [t for a in asked for t in a]
    return ids


def with_retrieval_exercises(blocks, tokenizer, share, seed=0):
    """``blocks`` [N, L] with ``share`` of them (spread evenly through the order) turned into retrieval exercises
    (``retrieval_exercise``), seeded by ``seed``. Returns (blocks, how many were turned)."""
    import torch

    if share <= 0:
        return blocks, 0
    rng = random.Random(f"retrieval-exercises-{seed}")
    blocks, turned = blocks.clone(), 0
    for i in range(len(blocks)):
        if int((i + 1) * share) > int(i * share):  # every 1/share-th block
            ids = retrieval_exercise(blocks[i].tolist(), tokenizer, rng)
            if ids is not None:
                blocks[i] = torch.tensor(ids, dtype=blocks.dtype)
                turned += 1
    return blocks, turned
