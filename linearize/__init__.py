"""linearize: convert pretrained HuggingFace transformers into linear-attention and hybrid models.

The top level is lazy: ``import linearize`` loads nothing else, and each name below imports its part on
first use (so ``linearize.kernels`` loads without transformers' model code). Using the model classes,
``convert`` or ``load_base`` registers converted checkpoints with transformers' Auto classes.
"""

import importlib
import importlib.metadata
import sys
import types

__version__ = importlib.metadata.version("linearize")

_LAZY = {
    "LinearizedConfig": "linearize.convert.auto",
    "LinearizedForCausalLM": "linearize.convert.auto",
    "LinearizedModel": "linearize.convert.auto",
    "convert": "linearize.api",
    "distill": "linearize.api",
    "load_base": "linearize.api",
    "load_tokenizer": "linearize.api",
    "TARGETS": "linearize.api",
}
__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'linearize' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


class _Face(types.ModuleType):
    """``linearize.convert`` and ``linearize.distill`` are the API's functions, and also the names of subpackages:
    importing a subpackage would rebind the name to it, so that rebinding is skipped (the subpackage itself
    stays importable: ``from linearize.convert.bases import load_base``)."""

    def __setattr__(self, name, value):
        if name in ("convert", "distill") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Face
