"""linearize: convert pretrained HuggingFace transformers into linear-attention and hybrid models.

The top level is lazy: ``import linearize`` loads nothing else, and each name below imports its part on
first use (so ``linearize.kernels`` loads without transformers' model code). Using the model classes,
``convert`` or ``load_base`` registers converted checkpoints with transformers' Auto classes.
"""

import importlib
import importlib.metadata

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
