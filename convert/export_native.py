"""Native export: a converted model written as an architecture transformers ships, so it loads with plain
``AutoModelForCausalLM.from_pretrained(folder)``, no remote code, and serving engines that register the
architecture can run it. Only pairs that map exactly (same function, not an approximation) are exported; others
are refused.

One module per host architecture holds its mapping and registers itself for the target it exports
(``register``): ``export_granitemoehybrid`` (``mamba`` on Llama, Mistral or Qwen2 bases) and ``export_qwen3_next``
(``gdn`` on Qwen3 bases). This module holds what they share: the registry, the checks common to every host, the
export itself (``export_native``) and its errors (``ExportError``).
"""

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from linearize.convert.configuration_linearized import LinearizedConfig
from linearize.convert.families import base_layer_types
from linearize.convert.save import atomic_folder
from linearize.errors import LinearizeError

# The modules that register hosts, in the order their targets are listed (and tried for a model that kept every
# layer): imported on first use, so each may import this module.
HOST_MODULES = ("linearize.convert.export_granitemoehybrid", "linearize.convert.export_qwen3_next")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class ExportError(LinearizeError):
    """A model that cannot be written natively; the message is the one line the CLI prints."""


@dataclass(frozen=True)
class Host:
    """A host architecture transformers ships, as the export of one mixer target.

    check_layer(i, settings) and check_base(base_config) raise ExportError for what the host cannot express (they
    run after the common checks of the layer, and of the base, see ``check_exportable``); config(model) is the
    host's config, state_dict(model, config) the tensors under its names; card(config, source, layers, name) the
    README.md; config_json(written, config, rope) edits the written config.json's dict for engines that read the
    host's own field names (it may pop entries of ``rope``, the rope parameters not yet written)."""

    target: str  # the mixer target it exports
    families: tuple  # the base families it exports from
    model_type: str
    name: str  # as messages and cards name it
    model_class: str  # transformers' class name
    check_layer: Callable
    check_base: Callable
    config: Callable
    state_dict: Callable
    card: Callable
    config_json: Callable


_REGISTRY = {}  # target -> Host


def register(host):
    """Make ``host`` the export of its target (a host module calls it when imported)."""
    _REGISTRY[host.target] = host
    return host


def hosts():
    """{target: Host}, every host module imported, in HOST_MODULES' order (by the module defining each host's
    ``config``) whichever was imported first."""
    for module in HOST_MODULES:
        importlib.import_module(module)
    rank = {m: i for i, m in enumerate(HOST_MODULES)}
    return dict(sorted(_REGISTRY.items(), key=lambda item: rank.get(item[1].config.__module__, len(rank))))


def host_of(model_type):
    """The Host whose architecture is ``model_type``."""
    return next(h for h in hosts().values() if h.model_type == model_type)


def __getattr__(name):  # names derived from the registry, which fills on first use
    if name == "HOST_NAMES":  # model_type -> the host's name
        return {h.model_type: h.name for h in hosts().values()}
    if name == "SUPPORTED":
        return supported()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def supported():
    """The sentence naming what export supports, which the refusals of a model, base or target end with."""

    def listed(names):
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"

    pairs = " and ".join(f"target {h.target!r} on {listed(h.families)} bases (as {h.name})" for h in hosts().values())
    return f"native export supports {pairs}: every converted layer that mixer, the others softmax attention"


def layer_types(mixers):
    """The host's layer_types: "linear_attention" where a layer converted, "full_attention" where it kept attention,
    and one more "full_attention" layer, last, where every layer converted (a pass-through layer: zero projections
    and MLP, so it adds exactly 0 to the residual stream). The hosts (transformers 5.x) cannot run with a cache when
    no layer is attention: their mask code asks the cache for a length that only attention layers keep; the
    pass-through layer's KV cache (one layer's worth, of zeros) gives the cache its length."""
    return ["linear_attention" if m else "full_attention" for m in mixers] + (["full_attention"] if all(mixers) else [])


def per_head(t, heads, groups):
    """Rows [heads * D, ...] of KV heads repeated to ``heads * groups`` query heads (GQA)."""
    return t.reshape(heads, -1, *t.shape[1:]).repeat_interleave(groups, 0).reshape(-1, *t.shape[1:])


def _load(model_or_dir):
    """(converted model, source folder or None)."""
    if not isinstance(model_or_dir, (str, os.PathLike)):
        return model_or_dir, None
    folder = Path(model_or_dir).expanduser()
    config = folder / "config.json"
    if not config.is_file():
        raise ExportError(f"{str(model_or_dir)!r} is not a converted checkpoint folder (no config.json)")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type != "linearized":
        raise ExportError(f"{str(model_or_dir)!r} is a {model_type!r} model, not a linearize checkpoint; {supported()}")
    check_exportable(json.loads(config.read_text()))  # refuse before loading any weights
    from linearize.convert.auto import LinearizedForCausalLM

    return LinearizedForCausalLM.from_pretrained(folder, dtype="auto").eval(), folder


def check_exportable(config):
    """Raise ExportError (one line naming what is supported) unless ``config`` (a LinearizedConfig, or the
    dict of its config.json) maps exactly onto a host architecture; return the target whose host it maps
    onto ("mamba": GraniteMoeHybrid, "gdn": Qwen3-Next; a model that kept every layer goes to its family's)."""
    if isinstance(config, dict):
        config = LinearizedConfig.from_dict(config)
    registry = hosts()
    family = config.base_config.get("model_type")
    if not any(family in h.families for h in registry.values()):
        raise ExportError(f"cannot export a {family!r} base: {supported()}")
    mixers = config.mixers
    targets = sorted({m["target"] for m in mixers if m})
    if len(targets) > 1 or (targets and targets[0] not in registry):
        raise ExportError(
            f"cannot export target{'s' if len(targets) > 1 else ''} {', '.join(map(repr, targets))}: {supported()}"
        )
    target = targets[0] if targets else next(t for t, h in registry.items() if family in h.families)
    host = registry[target]
    if family not in host.families:
        raise ExportError(f"cannot export target {target!r} on a {family!r} base: {supported()}")
    base = config.get_base_config()
    for i, m in enumerate(mixers):
        if not m:
            continue
        if m.get("window") or m.get("sinks"):
            raise ExportError(
                f"layer {i}: a {target} mixer with a softmax window (window {m.get('window', 0)}, sinks "
                f"{m.get('sinks', 0)}) has no {host.name} form, whose {target} layers hold no window; export supports "
                f"{target} layers without one (convert without --window and --sinks)"
            )
        host.check_layer(i, m)
        if m.get("norm_eps") is not None and float(m["norm_eps"]) != float(base.rms_norm_eps):
            raise ExportError(
                f"layer {i}: the {target} output norm's epsilon {m['norm_eps']} differs from "
                f"rms_norm_eps {base.rms_norm_eps}, which {host.name} uses for both; export needs them "
                "equal"
            )
    kernels = {m.get("conv_kernel", 4) for m in mixers if m}
    if len(kernels) > 1:
        raise ExportError(
            f"{target} layers with different conv_kernel sizes {sorted(kernels)}: {host.name} has one "
            "convolution size; export supports one size"
        )
    if getattr(base, "hidden_act", "silu") != "silu":
        raise ExportError(
            f"hidden_act {base.hidden_act!r}: {host.name}'s convolution uses the model's activation, and "
            f"the {target} mixer's is SiLU, so export supports 'silu' only"
        )
    host.check_base(base)
    types = base_layer_types(base)
    sliding = [i for i, m in enumerate(mixers) if not m and types[i] != "full_attention"]
    if sliding:
        raise ExportError(
            f"kept attention layer{'s' if len(sliding) > 1 else ''} {sliding} use"
            f"{'' if len(sliding) > 1 else 's'} a sliding window; {host.name}'s attention is full, "
            "so export supports kept layers with full attention only (convert those layers too, or use "
            "a base without sliding windows)"
        )
    return target


def native_config(model):
    """The host architecture's config for a converted model (GraniteMoeHybrid or Qwen3-Next)."""
    return hosts()[check_exportable(model.config)].config(model)


def native_state_dict(model, config):
    """The converted model's tensors under the host's names and layout."""
    return host_of(config.model_type).state_dict(model, config)


def native_model(model):
    """A host model (GraniteMoeHybridForCausalLM or Qwen3NextForCausalLM) computing what ``model`` computes."""
    import transformers

    config = native_config(model)
    host = host_of(config.model_type)
    with torch.device("meta"):
        native = getattr(transformers, host.model_class)(config)
    sd = native_state_dict(model, config)
    missing, unexpected = native.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"weights did not map onto {host.name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        native.tie_weights()
    # The rotary frequencies are a computed (non-persistent) buffer: build them for real.
    native.model.rotary_emb = type(native.model.rotary_emb)(config).to(model.device)
    meta = [n for n, t in [*native.named_parameters(), *native.named_buffers()] if t.is_meta]
    if meta:
        raise RuntimeError(f"{host.name} tensors left unset: {meta[:5]}")
    return native.eval()


def model_card(config, source, layers, name="PATH"):
    """A short README.md: what the folder is and which engines run it (``layers``: the converted model's)."""
    return host_of(config.model_type).card(config, source, layers, name)


def export_native(model_or_dir, out, tokenizer=None):
    """Write ``model_or_dir`` (a converted model, or its checkpoint folder) to ``out`` as the architecture
    transformers ships for it (GraniteMoeHybrid for mamba, Qwen3-Next for gdn on Qwen3, see their modules):
    safetensors, config, generation config, the tokenizer (``tokenizer``, or the source folder's) and a
    README.md. Atomic: written to a temporary sibling folder, renamed into place when complete. Raises
    ExportError (one line) for models that do not map exactly. Returns ``out`` as a Path."""
    from transformers import AutoTokenizer, GenerationConfig

    model, folder = _load(model_or_dir)
    native = native_model(model)
    if tokenizer is None and folder is not None and any((folder / f).exists() for f in TOKENIZER_FILES):
        tokenizer = AutoTokenizer.from_pretrained(folder)
    if folder is not None and (folder / "generation_config.json").exists():
        generation = GenerationConfig.from_pretrained(folder)
    else:
        generation = getattr(model, "generation_config", None) or GenerationConfig.from_model_config(native.config)
    out = Path(out)
    with atomic_folder(out) as tmp:
        native.generation_config = generation
        native.save_pretrained(tmp)
        # As the hosts' own checkpoints write them, for engines that read these fields (SGLang's config reads
        # rope_theta / rope_scaling; each host adds its own, ``Host.config_json``): transformers maps the rope
        # fields back to rope_parameters.
        path = tmp / "config.json"
        written = json.loads(path.read_text())
        rope = dict(native.config.rope_parameters)
        host_of(native.config.model_type).config_json(written, native.config, rope)
        written["rope_theta"] = rope.pop("rope_theta")
        written["rope_scaling"] = rope if rope.get("rope_type", "default") != "default" else None
        path.write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(
            model_card(native.config, folder or model.config.linearize.get("base"), len(model.model.layers), out.name)
        )
    return out
