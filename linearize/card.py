"""The model card (README.md) of a converted checkpoint: Hub metadata, the method and its paper, the
plan, the distillation history, the evaluation tables when reports are present, state size against the
KV cache, and a usage snippet that runs with plain transformers."""

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from linearize.convert.targets import MIXERS
from linearize.evals import report

EMBEDDED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
KNOWN_LICENSES = {EMBEDDED_ID: "apache-2.0"}  # the embedded base; hub bases: read from their own card


def base_hub_id(base):
    """The Hub id of a recorded base (aliases of the embedded model map to its Hub id)."""
    from linearize.convert.bases import ALIASES, EMBEDDED

    if base == EMBEDDED or ALIASES.get(base) == EMBEDDED:
        return EMBEDDED_ID
    return ALIASES.get(base, base)


def paper(target):
    """The citation line of a target: its mixer's papers (``citations``), short form."""
    citations = MIXERS[target].citations if target in MIXERS else ()
    return "; ".join(c.short() for c in citations) + ("." if citations else "")


def bibtex(target):
    """The BibTeX entries of a target's papers, or an empty string."""
    return "\n\n".join(c.bibtex() for c in (MIXERS[target].citations if target in MIXERS else ()))


def base_license(base_id):
    """The base's license where known: built in for the embedded model, else its Hub card (online only)."""
    from huggingface_hub import constants

    if base_id in KNOWN_LICENSES:
        return KNOWN_LICENSES[base_id]
    if constants.HF_HUB_OFFLINE or base_id.count("/") != 1 or Path(base_id).exists():
        return None
    try:
        return ModelCard.load(base_id).data.license
    except Exception:
        return None


def decode_state_bytes(folder, seq_len=4096):
    """(decode-state bytes, base KV-cache bytes) per sequence, from the config alone (a meta-device model)."""
    import torch

    from linearize.convert.configuration_linearized import LinearizedConfig
    from linearize.convert.modeling_linearized import LinearizedForCausalLM

    config = LinearizedConfig.from_pretrained(folder)
    dtype = getattr(torch, str(getattr(config, "dtype", None) or "float32").replace("torch.", ""), torch.float32)
    with torch.device("meta"):
        model = LinearizedForCausalLM(config).to(dtype)
    return model.cache_bytes(seq_len)


def model_card(folder, repo_id=None):
    """Build the card for the checkpoint in ``folder`` (its config, and eval/bench JSON if present)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    info = config.get("linearize", {})
    base = info.get("base") or "unknown"
    base_id = base_hub_id(base)
    target = info.get("target", "?")
    mixers = config.get("mixers", [])
    converted = [i for i, m in enumerate(mixers) if m]
    kept = [i for i, m in enumerate(mixers) if not m]
    data = ModelCardData(
        base_model=base_id,
        library_name="transformers",
        license=base_license(base_id),
        tags=["linearize", "linear-attention", target, "distillation"],
        pipeline_tag="text-generation",
    )
    results = []
    for name in ("eval.json", "bench.json"):
        if (folder / name).exists():
            results += report.load([folder / name])
    history = [h for h in info.get("history", []) if h.get("stage")]
    lines = [
        f"# {repo_id or folder.name}",
        "",
        f"`{base_id}` with softmax attention replaced by **{target}** in {len(converted)} of {len(mixers)} layers, "
        "converted (and distilled) with [linearize](https://pypi.org/project/linearize/). It is an ordinary "
        "transformers checkpoint: the modeling code ships in this repository.",
        "",
        f"**Method:** {paper(target)}",
        "",
        "## Plan",
        "",
        f"- converted layers: {converted}",
        f"- softmax attention kept in: {kept or 'none'}",
    ]
    heads = [(i, m["mamba_heads"]) for i, m in enumerate(mixers) if m and "mamba_heads" in m]
    if heads:
        lines.append("- Mamba heads per layer: " + ", ".join(f"{i}: {h}" for i, h in heads))
    sparse = sorted({m["sparse_cache"] for m in mixers if m and m.get("sparse_cache")})
    if sparse:
        by = {m.get("sparse_select", "attention") for m in mixers if m and m.get("sparse_cache")}
        how = {
            "attention": "the attention they received",
            "mean": "the attention they received per query that saw them",
            "error": "LoLA's self-recall error",
        }
        lines.append(
            f"- LoLA's sparse cache: {', '.join(map(str, sparse))} keys per key/value head kept exact beside the "
            f"window in the converted layers, chosen by {' / '.join(how[b] for b in sorted(by))} (training-free)"
        )
    if info.get("plan_evidence"):
        ev = info["plan_evidence"]
        how = (
            f"window {ev['window']}"
            if "window" in ev
            else f"{ev['samples'][0]} x {ev['samples'][1]} calibration tokens"
        )
        lines.append(f"- chosen from {ev['method']} ({how}), evidence in config.json")
    if info.get("recipe"):
        from linearize.recipes import as_flags

        about = f" ({info['recipe']['about']})" if info["recipe"].get("about") else ""  # older checkpoints lack it
        lines.append(f"- recipe `{info['recipe']['name']}`{about}: `{as_flags(info['recipe'])}`")
    lines += ["", "## Distillation", ""]
    if history:
        lines += ["| stage | tokens | steps | seconds | loss (first -> last) | data |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {h['stage']} | {h['tokens']:,} | {h['steps']} | {h['seconds']:.0f} | "
            f"{h['first_loss']:.4g} -> {h['last_loss']:.4g} | {h.get('data', '')} |"
            for h in history
        ]
    else:
        lines.append("Not distilled: this is the direct conversion.")
    if info.get("heldout_perplexity"):
        from linearize.pipeline import summary_lines

        lines += ["", "## Quality (measured by the main job; teacher and this model on the same windows)", ""]
        lines += [f"- {line}" for line in summary_lines(info["heldout_perplexity"])]
    if results:
        lines += ["", "## Evaluation", "", report.comparison(results).strip()]
    state, kv = decode_state_bytes(folder)
    lines += [
        "",
        "## Memory",
        "",
        "| per sequence at 4k tokens | bytes |",
        "|---|---|",
        f"| this model's decode state (recurrent states + remaining KV) | {state / 2**20:.1f} MiB |",
        f"| the base model's KV cache | {kv / 2**20:.1f} MiB |",
    ]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'repo = "{repo_id or folder.name}"',
        "tokenizer = AutoTokenizer.from_pretrained(repo)",
        "model = AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True)",
        'inputs = tokenizer("The capital of France is", return_tensors="pt")',
        "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=20)[0]))",
        "```",
        "",
        f"Provenance (library versions, plan, history) is recorded under `linearize` in config.json: "
        f"{json.dumps(info.get('versions', {}))}.",
    ]
    if bibtex(target):
        lines += ["", "## Citation", "", "```bibtex", bibtex(target), "```"]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
