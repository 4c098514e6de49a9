"""linearize: convert pretrained HuggingFace transformers into linear-attention and hybrid models.

The top level is lazy: ``import linearize`` loads nothing else, and each name below imports its part on
first use (so ``linearize.kernels`` loads without transformers' model code). Yet ``import linearize`` is enough for
``AutoModelForCausalLM.from_pretrained(folder)`` to load a converted checkpoint without remote code: the Auto classes
get linearize's when transformers loads them (or at once, if it already has), as ``import fla`` registers fla's.

The parts are subpackages: ``linearize.convert``, ``linearize.distill``, ``linearize.kernels``, ... The API's functions
are ``convert_model`` and ``distill_model`` (``linearize.api``), so no name is both a function and a package.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import os
import sys

__version__ = importlib.metadata.version("linearize")

_LAZY = {
    "LinearizedConfig": "linearize.convert.auto",
    "LinearizedForCausalLM": "linearize.convert.auto",
    "LinearizedModel": "linearize.convert.auto",
    "convert_model": "linearize.api",
    "distill_model": "linearize.api",
    "load_base": "linearize.api",
    "load_tokenizer": "linearize.api",
    "TARGETS": "linearize.api",
}
__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name.removesuffix("_model"))
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'linearize' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


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


# Registration with transformers' Auto classes, deferred until transformers loads them: the config class when
# configuration_auto has run, the model classes when modeling_auto has. When our own module is what is importing
# transformers' (it is mid-import then), the registration waits until that module has run.
_AUTO = {
    "transformers.models.auto.configuration_auto": "linearize.convert.configuration_linearized",
    "transformers.models.auto.modeling_auto": "linearize.convert.auto",
}
_WAITING = set()


def _register(auto_module):
    name = _AUTO[auto_module]
    if name in sys.modules and not hasattr(sys.modules[name], "LinearizedConfig"):
        _WAITING.add(auto_module)
        return
    module = importlib.import_module(name)
    if auto_module.endswith("configuration_auto"):
        sys.modules[auto_module].AutoConfig.register(
            module.LinearizedConfig.model_type, module.LinearizedConfig, exist_ok=True
        )


class _ThenRegister(importlib.abc.Loader):
    """Runs the wrapped loader's module, then the registrations it makes possible; everything else is the wrapped
    loader's."""

    def __init__(self, loader, name):
        self.loader, self.name = loader, name

    def __getattr__(self, attr):
        return getattr(self.loader, attr)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        if self.name in _AUTO:
            _register(self.name)
        for auto_module in [a for a in _WAITING if _AUTO[a] == self.name]:
            _WAITING.discard(auto_module)
            _register(auto_module)


class _RegisterWithAuto(importlib.abc.MetaPathFinder):
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname not in _AUTO and fullname not in _AUTO.values():
            return None
        for finder in sys.meta_path:
            if finder is not cls and hasattr(finder, "find_spec"):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    spec.loader = _ThenRegister(spec.loader, fullname)
                    return spec
        return None


sys.meta_path.insert(0, _RegisterWithAuto)
for _name in _AUTO:
    if _name in sys.modules:
        _register(_name)
