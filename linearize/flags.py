"""CLI flags generated from the settings dataclasses (``ConvertSettings``, ``TrainConfig``): one flag per field, its
help the field's ``metadata["help"]`` (transformers' HfArgumentParser convention; litgpt does the same from
docstrings). Unlike HfArgumentParser every flag defaults to None, so a flag the user did not give leaves the
dataclass's or a recipe's default in place, and the dataclass stays the one place a default is written."""

import dataclasses
import types
import typing


def _scalar(kind):
    """int | None -> int."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    return kind


def add_flags(parser, schema, only=None, skip=(), required=(), help=None):
    """Add ``--field-name`` (or ``metadata["flag"]``) for each scalar field of ``schema``; ``only`` and ``skip`` select
    fields by name, ``required`` makes flags required, ``help`` replaces help texts by field name."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        kind = _scalar(hints[f.name])
        if (only is not None and f.name not in only) or f.name in skip or kind not in (str, int, float, bool):
            continue
        text = (help or {}).get(f.name, f.metadata["help"])
        shown = f.default is not None and f.default is not False and f.default is not dataclasses.MISSING
        if shown and f.name not in required and "default" not in text:
            text += f" (default {f.default})"
        kwargs = {"dest": f.name, "default": None, "help": text.replace("%", "%%")}
        if kind is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = kind
            if "choices" in f.metadata:  # shown, not checked here: the schema refuses a bad value in its own words
                kwargs["metavar"] = "{" + ",".join(f.metadata["choices"]) + "}"
        parser.add_argument(
            f.metadata.get("flag", "--" + f.name.replace("_", "-")), required=f.name in required, **kwargs
        )


def given(args, schema):
    """The fields of ``schema`` the parsed ``args`` set (not None), by name."""
    return {
        f.name: getattr(args, f.name) for f in dataclasses.fields(schema) if getattr(args, f.name, None) is not None
    }
