"""The evaluation suite as one function: load a model (converted checkpoint or base), run the chosen
evaluations, return a result dict that ``evals.report`` turns into tables."""

from pathlib import Path

from linearize.convert.bases import load_base, load_tokenizer
from linearize.evals.lm_eval_bridge import metrics, run_lm_eval
from linearize.evals.perplexity import agreement, heldout_ids, perplexity
from linearize.evals.recall import recall_suite

SUITES = ("ppl", "agreement", "recall", "lm-eval")


def load_model(spec, dtype=None):
    """(model, tokenizer, name) for a converted checkpoint folder or any base ``--base`` accepts."""
    import json

    import torch
    from transformers import AutoTokenizer

    path = Path(str(spec)).expanduser()
    config = path / "config.json"
    if config.exists() and json.loads(config.read_text()).get("model_type") == "linearized":
        from linearize.convert.modeling_linearized import LinearizedForCausalLM

        model = LinearizedForCausalLM.from_pretrained(path, dtype=dtype or torch.float32).eval()
        has_tokenizer = any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
        tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer else load_tokenizer(model.config.linearize["base"])
        return model, tokenizer, path.name
    return load_base(spec, dtype=dtype), load_tokenizer(spec), str(spec)


def evaluate(model, tokenizer, name, suite=("ppl",), teacher=None, data=None, seq_len=512, max_tokens=8192,
             tasks=(), include_path=None, limit=None, passkey_lengths=(256, 512, 1024), mqar_pairs=(8, 16)):
    """Run the evaluations in ``suite`` (see SUITES); ``teacher`` is needed for 'agreement'."""
    unknown = set(suite) - set(SUITES)
    if unknown:
        raise ValueError(f"unknown eval suite {sorted(unknown)}: choose from {', '.join(SUITES)}")
    quality = {}
    if "ppl" in suite or "agreement" in suite:
        ids = heldout_ids(tokenizer, data, seq_len=seq_len, max_tokens=max_tokens)
        if "ppl" in suite:
            quality.update(perplexity(model, ids))
        if "agreement" in suite and teacher is not None and teacher is not model:
            quality.update(agreement(model, teacher, ids))
    if "recall" in suite:
        quality.update(recall_suite(model, tokenizer, passkey_lengths, mqar_pairs))
    if "lm-eval" in suite:
        if not tasks:
            raise ValueError("the lm-eval suite needs tasks (for example --tasks arc_easy,piqa)")
        quality["lm_eval"] = metrics(run_lm_eval(model, tokenizer, tasks, include_path=include_path, limit=limit))
    return {"name": name, "quality": quality}
