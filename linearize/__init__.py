"""linearize: convert pretrained HuggingFace transformers into linear-attention and hybrid models.

The top level is lazy: ``import linearize`` loads nothing else, and each name below imports its part on
first use (so ``linearize.kernels`` loads without transformers' model code). Using the model classes,
``convert`` or ``load_base`` registers converted checkpoints with transformers' Auto classes.
"""

import importlib
import importlib.machinery
import importlib.metadata
import os
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


# The parts (kernels/, convert/, data/, distill/, evals/) are folders without an __init__.py, so that none of them is
# a top-level regular package that would shadow a dependency's package of that name (transformers imports HF's
# `kernels`) when the project's folder is on sys.path. A wheel holds them inside linearize/, where they import as
# namespace subpackages; in a source tree (an editable install, or `python -m ...` run from the project's folder) they
# sit beside this folder, and setuptools' editable finder does not find folders without __init__.py there
# (pypa/setuptools#4943), so this finder maps `linearize.<part>` to them.
_PARTS = ("kernels", "data", "convert", "distill", "evals")


class _SourceParts:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        parent, _, part = fullname.rpartition(".")
        if parent == __name__ and part in _PARTS:
            return importlib.machinery.PathFinder.find_spec(fullname, [cls.root])
        return None


if not os.path.isdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")):
    sys.meta_path.append(_SourceParts)
