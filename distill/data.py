"""Training data: documents from any source ``data.texts`` reads, instruction rows through the base
tokenizer's chat template, a held-out split by document (never trained on), packing to fixed-length
blocks, and a seeded order."""

import random

import torch

from linearize.data.texts import DataError, load_rows, split_documents, text_column


def documents(spec=None, tokenizer=None, split="train", text_field=None):
    """Documents as strings. Rows with ``messages`` (chat) or ``prompt``/``response`` (instruction)
    are rendered with the tokenizer's chat template; other rows give their text column."""
    rows = load_rows(spec, split)
    cols = set(rows.column_names)
    if "messages" in cols or {"prompt", "response"} <= cols:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise DataError(f"{str(spec)!r} holds chat/instruction rows, which need a tokenizer with a chat template")
        out = []
        for row in rows:
            messages = row["messages"] if "messages" in cols else [
                {"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}]
            out.append(tokenizer.apply_chat_template(messages, tokenize=False))
        return out
    field = text_column(rows, spec, text_field)
    return [t for t in rows[field] if isinstance(t, str) and t.strip()]


def pack(docs, tokenizer, seq_len):
    """Token blocks [N, seq_len]: documents joined by EOS, cut into consecutive blocks (the tail that
    does not fill a block is dropped)."""
    eos = tokenizer.eos_token_id
    ids = []
    for doc in docs:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


_BLOCKS = {}  # (source, tokenizer, seq_len, split, seed) -> blocks: the main job asks three times


def build_blocks(spec, tokenizer, seq_len=512, heldout_fraction=0.05, seed=0, max_train_tokens=None):
    """(train [N, seq_len] in a seeded order, heldout [M, seq_len]). The split is by document, before
    packing, so no held-out token is ever in a training block; the same seed gives the same split as
    ``evals.perplexity.heldout_ids``."""
    key = (str(spec), getattr(tokenizer, "name_or_path", id(tokenizer)), len(tokenizer), seq_len, heldout_fraction, seed)
    if key not in _BLOCKS:
        docs = documents(spec, tokenizer)
        train_docs, held_docs = split_documents(docs, heldout_fraction, seed)
        train, held = pack(train_docs, tokenizer, seq_len), pack(held_docs, tokenizer, seq_len)
        if len(train) == 0:
            raise DataError(f"{str(spec or 'default')!r} gives no training block of {seq_len} tokens")
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        _BLOCKS.clear()
        _BLOCKS[key] = (train[order], held)
    train, held = _BLOCKS[key]
    if max_train_tokens is not None:
        train = train[: max(1, max_train_tokens // seq_len)]
    return train, held
