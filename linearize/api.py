"""The public Python API; the CLI and the cookbook call these. At the top level ``convert`` and ``distill`` are
``linearize.convert_model`` and ``linearize.distill_model`` (``linearize.convert`` is the subpackage).

Precision: ``load_base(spec, dtype="auto")`` loads in bfloat16 where CUDA is available and float32
otherwise (or the dtype named: "bfloat16", "float16", "float32"; ``resolve_dtype`` says which);
``convert`` keeps the base's dtype, ``distill`` trains a student in the dtype it has (its trained
parameters held in fp32) against a teacher in any dtype; ``distill(..., stage="transfer",
transfer_mode="streamed" | "whole")`` chooses attention transfer's form (default: streamed on CUDA, whole on
CPU; ``linearize.distill.stages.transfer_loss``: the same losses and gradients)."""

from linearize.convert.bases import DTYPES, load_base, load_tokenizer, resolve_base, resolve_dtype
from linearize.convert.convert import convert, new_parameter_count
from linearize.convert.targets import MIXERS
from linearize.distill.recipe import distill

TARGETS = tuple(MIXERS)

__all__ = [
    "DTYPES",
    "TARGETS",
    "convert",
    "distill",
    "load_base",
    "load_tokenizer",
    "new_parameter_count",
    "resolve_base",
    "resolve_dtype",
]
