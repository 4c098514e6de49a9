"""The evaluation suite as one function: load a model (converted checkpoint or base), run the chosen
evaluations, return a result dict that ``evals.report`` turns into tables."""

from pathlib import Path

from linearize.convert.bases import load_base, load_tokenizer, resolve_dtype
from linearize.evals.lm_eval_bridge import metrics, run_lm_eval
from linearize.evals.perplexity import agreement, heldout_ids, perplexity
from linearize.evals.recall import RECALL_HAYSTACK, RECALL_LENGTHS, RECALL_TASKS, recall_suite, text_recall

SUITES = ("ppl", "agreement", "recall", "lm-eval")


def load_model(spec, dtype="auto"):
    """(model, tokenizer, name) for a converted checkpoint folder or any base ``--base`` accepts, loaded in
    ``dtype`` whatever dtype the checkpoint was saved in (auto: bfloat16 on CUDA, float32 on CPU), on the
    GPU where CUDA is available."""
    import json

    import torch
    from transformers import AutoTokenizer

    dtype = resolve_dtype(dtype)
    path = Path(str(spec)).expanduser()
    config = path / "config.json"
    if config.exists() and json.loads(config.read_text()).get("model_type") == "linearized":
        from linearize.convert.auto import LinearizedForCausalLM

        model = LinearizedForCausalLM.from_pretrained(path, dtype=dtype).eval()
        has_tokenizer = any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
        tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer else load_tokenizer(model.config.linearize["base"])
        name = path.name
    else:
        model, tokenizer, name = load_base(spec, dtype=dtype), load_tokenizer(spec), str(spec)
    return model.to("cuda" if torch.cuda.is_available() else "cpu"), tokenizer, name


def max_positions(spec):
    """The longest sequence a model (checkpoint folder or base spec) takes, from its config alone (no
    weights loaded); None where the config does not say."""
    import json

    from linearize.convert.bases import load_config

    config = Path(str(spec)).expanduser() / "config.json"
    if config.exists() and json.loads(config.read_text()).get("model_type") == "linearized":
        return json.loads(config.read_text()).get("max_position_embeddings")
    return getattr(load_config(spec)[1], "max_position_embeddings", None)


def evaluate(model, tokenizer, name, suite=("ppl",), teacher=None, data=None, seq_len=512, max_tokens=8192,
             tasks=(), include_path=None, limit=None, passkey_lengths=(), mqar_pairs=(8, 16),
             buckets=None, split="heldout", ids=None, recall_tasks=RECALL_TASKS, recall_lengths=RECALL_LENGTHS,
             recall_depths=3, recall_prompts=20, haystack=RECALL_HAYSTACK, seed=0):
    """Run the evaluations in ``suite`` (see SUITES); ``teacher`` is needed for 'agreement'. ``buckets``
    (position bucket edges) adds per-position perplexity; ``split`` is "heldout" (the held-out split of
    ``data``) or "all" (every document: out-of-domain corpora); ``ids`` [N, T] replaces that text with
    given windows (so that teacher and student see the same ones). 'recall' is ``recall.text_recall``
    (``recall_tasks`` at ``recall_lengths``, ``recall_depths`` depth buckets, ``recall_prompts`` prompts per
    cell, haystacks from ``haystack``) and MQAR (``mqar_pairs``), and the repeated-filler passkey at
    ``passkey_lengths`` where any are given."""
    unknown = set(suite) - set(SUITES)
    if unknown:
        raise ValueError(f"unknown eval suite {sorted(unknown)}: choose from {', '.join(SUITES)}")
    quality = {}
    if "ppl" in suite or "agreement" in suite:
        if ids is None:
            ids = heldout_ids(tokenizer, data, seq_len=seq_len, max_tokens=max_tokens, split=split)
        if "ppl" in suite:
            quality.update(perplexity(model, ids, buckets=buckets))
        if "agreement" in suite and teacher is not None and teacher is not model:
            quality.update(agreement(model, teacher, ids))
    if "recall" in suite:
        if recall_tasks and recall_lengths:
            quality["recall"] = text_recall(model, tokenizer, haystack, recall_tasks, recall_lengths, recall_depths,
                                            recall_prompts, seed)
        older = recall_suite(model, tokenizer, passkey_lengths, mqar_pairs)
        quality.update({k: v for k, v in older.items() if v})
    if "lm-eval" in suite:
        if not tasks:
            raise ValueError("the lm-eval suite needs tasks (for example --tasks arc_easy,piqa)")
        quality["lm_eval"] = metrics(run_lm_eval(model, tokenizer, tasks, include_path=include_path, limit=limit))
    return {"name": name, "quality": quality}


def add_ratios(student, teacher):
    """Put the student/teacher perplexity ratios (overall and per position bucket) into ``student``'s
    quality, where both results have them."""
    s, t = student["quality"], teacher["quality"]
    if "perplexity" in s and "perplexity" in t:
        s["perplexity_ratio"] = s["perplexity"] / t["perplexity"]
    for label, bucket in s.get("by_position", {}).items():
        if label in t.get("by_position", {}):
            bucket["ratio"] = bucket["perplexity"] / t["by_position"][label]["perplexity"]
    return student
