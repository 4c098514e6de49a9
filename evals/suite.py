"""The evaluation suite as one function: run the chosen evaluations on a loaded model (``convert.load``), return a
result dict that ``evals.report`` turns into tables."""

from linearize.evals.lm_eval_bridge import metrics, run_lm_eval
from linearize.evals.perplexity import agreement, heldout_ids, perplexity
from linearize.evals.recall import RECALL_HAYSTACK, RECALL_LENGTHS, RECALL_TASKS, recall_suite, text_recall

SUITES = ("ppl", "agreement", "recall", "lm-eval")


def evaluate(
    model,
    tokenizer,
    name,
    suite=("ppl",),
    teacher=None,
    data=None,
    seq_len=512,
    max_tokens=8192,
    tasks=(),
    include_path=None,
    limit=None,
    passkey_lengths=(),
    mqar_pairs=(8, 16),
    buckets=None,
    split="heldout",
    ids=None,
    recall_tasks=RECALL_TASKS,
    recall_lengths=RECALL_LENGTHS,
    recall_depths=3,
    recall_prompts=20,
    haystack=RECALL_HAYSTACK,
    read_twice=False,
    seed=0,
):
    """Run the evaluations in ``suite`` (see SUITES); ``teacher`` is needed for 'agreement'. ``buckets``
    (position bucket edges) adds per-position perplexity; ``split`` is "heldout" (the held-out split of
    ``data``) or "all" (every document: out-of-domain corpora); ``ids`` [N, T] replaces that text with
    given windows (so that teacher and student see the same ones). 'recall' is ``recall.text_recall``
    (``recall_tasks`` at ``recall_lengths``, ``recall_depths`` depth buckets, ``recall_prompts`` prompts per
    cell, haystacks from ``haystack``, each text given twice with ``read_twice``) and MQAR (``mqar_pairs``), and
    the repeated-filler passkey at ``passkey_lengths`` where any are given. RULER's lm-eval tasks run at
    ``recall_lengths`` too."""
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
            quality["recall"] = text_recall(
                model,
                tokenizer,
                haystack,
                recall_tasks,
                recall_lengths,
                recall_depths,
                recall_prompts,
                seed,
                read_twice=read_twice,
            )
        older = recall_suite(model, tokenizer, passkey_lengths, mqar_pairs)
        quality.update({k: v for k, v in older.items() if v})
    if "lm-eval" in suite:
        if not tasks:
            raise ValueError("the lm-eval suite needs tasks (for example --tasks arc_easy,piqa)")
        quality["lm_eval"] = metrics(
            run_lm_eval(model, tokenizer, tasks, include_path=include_path, limit=limit, max_seq_lengths=recall_lengths)
        )
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
