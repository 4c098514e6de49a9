"""The public Python API; the CLI and the cookbook call these."""

from linearize.convert.bases import load_base, load_tokenizer, resolve_base
from linearize.convert.convert import convert, new_parameter_count
from linearize.convert.targets import MIXERS
from linearize.distill.recipe import distill

TARGETS = tuple(MIXERS)

__all__ = ["TARGETS", "convert", "distill", "load_base", "load_tokenizer", "new_parameter_count", "resolve_base"]
