"""From documents to token windows, the one way training and evaluation both take: a source's documents
(``texts.documents``, chat rows through the chat template), one seeded split by document (the seed is
fixed, so every run and every evaluation holds out the same documents), each document's token ids followed
by the EOS id (``pack``), and consecutive windows from the start (``windows``).

So the same data, tokenizer, window length and token budget give the same windows wherever they are cut:
distillation's training blocks never hold a held-out document, and `linearize eval`'s held-out windows are
the ones the main job measures in domain (``heldout_ids``).
"""

import torch

from linearize.data.texts import DataError, documents, split_documents

HELDOUT_FRACTION = 0.05
SPLIT_SEED = 0  # fixed: a training seed orders blocks, it never moves the held-out documents
SPLITS = ("heldout", "all")  # what evaluation measures: the held-out documents, or every document
PARTS = ("train",) + SPLITS

_SOURCE = {}  # the last source read: its documents by part and their token ids (the main job asks three times)


def pack(docs, tokenizer):
    """[tokens] long: each document's token ids (no special tokens added) followed by the tokenizer's EOS id,
    document after document. Each document is tokenised on its own, so no token spans two documents; a
    tokenizer without an EOS puts nothing between them."""
    eos = tokenizer.eos_token_id
    docs, parts = list(docs), []
    for start in range(0, len(docs), 1024):  # a batch at a time, held as tensors, not as Python ints
        ids = []
        for doc_ids in tokenizer(docs[start : start + 1024], add_special_tokens=False)["input_ids"]:
            ids.extend(doc_ids)
            if eos is not None:
                ids.append(eos)
        parts.append(torch.tensor(ids, dtype=torch.long))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def windows(ids, seq_len, max_tokens=None):
    """[N, seq_len] consecutive non-overlapping windows from the start of ``ids`` (the tail that fills no
    window is dropped): every one that fits, or with ``max_tokens`` the first max(1, max_tokens // seq_len)
    of them. N is 0 when ``ids`` holds not even one."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    n = len(ids) // seq_len
    if max_tokens is not None:
        n = min(n, max(1, max_tokens // seq_len))
    return ids[: n * seq_len].view(n, seq_len).clone()  # its own memory: the packed ids are cached


def _tokenizer_key(tokenizer):
    return (
        getattr(tokenizer, "name_or_path", id(tokenizer)),
        len(tokenizer),
        tokenizer.eos_token_id,
        getattr(tokenizer, "chat_template", None),
    )


def text_ids(tokenizer, data=None, split="heldout", heldout_fraction=HELDOUT_FRACTION):
    """[tokens] the packed token ids of ``data``'s documents in ``split``: "train" (what distillation trains
    on), "heldout" (the documents it never sees) or "all" (every document: a corpus training never saw).
    The tensor is cached for the next call: read it, do not change it (``windows`` copies)."""
    if split not in PARTS:
        raise DataError(f"unknown split {split!r}: choose from {', '.join(SPLITS)}")
    key = (str(data), _tokenizer_key(tokenizer), heldout_fraction)
    if _SOURCE.get("key") != key:
        docs = documents(data, tokenizer)
        train, held = split_documents(docs, heldout_fraction, SPLIT_SEED)
        _SOURCE.clear()
        _SOURCE.update(key=key, docs={"all": docs, "train": train, "heldout": held}, ids={})
    if split not in _SOURCE["ids"]:
        _SOURCE["ids"][split] = pack(_SOURCE["docs"][split], tokenizer)
    return _SOURCE["ids"][split]


def heldout_ids(
    tokenizer, data=None, seq_len=512, max_tokens=16384, split="heldout", heldout_fraction=HELDOUT_FRACTION
):
    """[N, seq_len] evaluation windows of ``data`` (the default corpus when None), about ``max_tokens`` of them
    (at least one window; ``None``: all): the held-out documents that training never sees
    (``split="heldout"``), or every document (``split="all"``: out-of-domain corpora). Raises DataError if the
    text holds not even one window."""
    if seq_len < 2:
        raise DataError(f"sequence length {seq_len} is too short: a window needs at least 2 tokens")
    ids = text_ids(tokenizer, data, split, heldout_fraction)
    out = windows(ids, seq_len, max_tokens)
    if len(out) == 0:
        name = "the default corpus" if data is None else repr(str(data))
        raise DataError(f"the {split} text of {name} has {len(ids)} tokens, fewer than one window of {seq_len}")
    return out
