"""Text sources, through ``datasets``: local files and folders (.txt, .jsonl, .json, .parquet), hub
datasets (``id``, ``id:config``, with a split), and the offline default corpus. ``documents`` reads any
of them (chat rows through the chat template) and ``split_documents`` holds documents out; ``data.packing``
turns them into token windows, the same way for training and for evaluation.

The offline default is the documentation installed with Python itself (standard-library module and
member docstrings): it exists on every machine, needs no network, mixes English prose with code, and
its documents are many and separable, so a held-out split by document is clean.
"""

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

from linearize.errors import LinearizeError

FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
TEXT_FIELDS = ("text", "content", "document")


class DataError(LinearizeError):
    """A data source that cannot be read; the message is the one line the CLI prints."""


def stdlib_documents(min_chars=200):
    """One document per public standard-library module: its docstring and its members' docstrings, in
    a fixed (sorted) order. Modules that fail to import here are skipped."""
    names = sorted(
        m.name
        for m in pkgutil.iter_modules()
        if m.name in sys.stdlib_module_names
        and not m.name.startswith("_")
        and m.name not in {"antigravity", "this", "idlelib", "turtledemo", "tkinter", "turtle", "pydoc_data", "lib2to3"}
    )
    docs = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception:  # platform-specific modules
            continue
        parts = [inspect.getdoc(module) or ""]
        for attr in sorted(dir(module)):
            if not attr.startswith("_"):
                try:
                    doc = inspect.getdoc(getattr(module, attr))
                except Exception:
                    doc = None
                if doc and len(doc) >= min_chars:
                    parts.append(doc)
        text = "\n\n".join(p for p in parts if p)
        if len(text) >= min_chars:
            docs.append(text)
    return docs


def load_rows(spec, split="train"):
    """A ``datasets.Dataset`` from a local file or folder, a named corpus ``corpus:NAME`` (see
    ``data.corpora``), or a hub dataset ``name`` / ``name:config`` (its ``split``); the offline
    default is a one-column ("text") dataset of ``stdlib_documents()``."""
    import datasets

    if spec is None or spec == "default":
        return datasets.Dataset.from_dict({"text": stdlib_documents()})
    if str(spec).startswith("corpus:"):  # a named out-of-domain corpus, fetched on first use
        from linearize.data.corpora import corpus_path

        spec = corpus_path(str(spec)[len("corpus:") :])
    path = Path(str(spec)).expanduser()
    if path.exists():
        files = sorted(p for p in path.rglob("*") if p.suffix in FORMATS) if path.is_dir() else [path]
        if not files:
            raise DataError(f"no .txt/.jsonl/.json/.parquet files in {str(spec)!r}")
        kinds = {FORMATS.get(p.suffix) for p in files}
        if None in kinds or len(kinds) != 1:
            raise DataError(f"{str(spec)!r}: use one format of .txt, .jsonl, .json or .parquet")
        kind = kinds.pop()
        try:
            return datasets.load_dataset(
                kind,
                data_files=[str(p) for p in files],
                split="train",
                **({"sample_by": "document"} if kind == "text" else {}),
            )
        except Exception as err:
            raise DataError(
                f"cannot read {str(spec)!r}: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
            ) from None
    name, _, config = str(spec).partition(":")
    try:
        return datasets.load_dataset(name, config or None, split=split)
    except Exception as err:
        raise DataError(
            f"unknown data {str(spec)!r}: not a local file or folder, and not loadable from the Hub "
            f"({type(err).__name__})"
        ) from None


def text_column(rows, spec, text_field=None):
    field = text_field or next((f for f in TEXT_FIELDS if f in rows.column_names), None)
    if field is None:
        raise DataError(
            f"{str(spec)!r} has no text column (looked for {', '.join(TEXT_FIELDS)}; columns: "
            f"{', '.join(rows.column_names)}); pass text_field="
        )
    return field


def documents(spec=None, tokenizer=None, split="train", text_field=None):
    """The documents of ``spec`` (see ``load_rows``) as strings: the one reading of a source that training and
    evaluation share. Rows with ``messages`` (chat) or ``prompt``/``response`` (instruction) are rendered with
    ``tokenizer``'s chat template; other rows give ``text_field`` or the first of text/content/document."""
    rows = load_rows(spec, split)
    cols = set(rows.column_names)
    if "messages" in cols or {"prompt", "response"} <= cols:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise DataError(f"{str(spec)!r} holds chat/instruction rows, which need a tokenizer with a chat template")
        out = []
        for row in rows:
            messages = (
                row["messages"]
                if "messages" in cols
                else [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}]
            )
            out.append(tokenizer.apply_chat_template(messages, tokenize=False))
        return out
    field = text_column(rows, spec, text_field)
    return [t for t in rows[field] if isinstance(t, str) and t.strip()]


def split_documents(docs, heldout_fraction=0.05, seed=0):
    """(train, heldout): a seeded split by document, so no held-out text is ever trained on. Training and
    evaluation split with the one seed ``data.packing.SPLIT_SEED``."""
    import random

    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n = max(1, round(heldout_fraction * len(docs))) if len(docs) > 1 else 0
    held = set(order[:n])
    return [d for i, d in enumerate(docs) if i not in held], [d for i, d in enumerate(docs) if i in held]
