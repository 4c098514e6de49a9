"""lm-eval on converted models, two ways that must agree:

- the harness's own command: ``lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True``;
- ``run_lm_eval(model, tokenizer, tasks)``: lm-eval's Python API with the model object (HFLM).

``write_tiny_tasks(folder)`` writes two small tasks with locally made data (a multiple-choice and a
generation task) for tests and smoke runs; ``--include_path`` points lm-eval at them.
"""

import json
from pathlib import Path

TINY_MC = "linearize_tiny_mc"
TINY_GEN = "linearize_tiny_gen"


def write_tiny_tasks(folder, n=12):
    """Write the tiny task YAMLs and their JSONL data into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    colors = ["red", "blue", "green", "yellow", "black", "white"]
    animals = ["cat", "dog", "horse", "bird", "fish", "cow"]
    mc, gen = [], []
    for i in range(n):
        c, a = colors[i % 6], animals[(i * 5) % 6]
        mc.append(
            {
                "question": f"The {a} is {c}. What color is the {a}? Answer:",
                "choices": [f" {x}" for x in colors[:4] if x != c][:3] + [f" {c}"],
                "answer": 3,
            }
        )
        gen.append({"prompt": f"Repeat the word. Word: {a}\nRepeat:", "target": f" {a}"})
    (folder / "tiny_mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
    (folder / "tiny_gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gen))
    common = "dataset_path: json\ntest_split: test\n"
    (folder / f"{TINY_MC}.yaml").write_text(
        f"task: {TINY_MC}\n{common}dataset_kwargs:\n  data_files:\n    test: {folder.resolve() / 'tiny_mc.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{answer}}'\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    (folder / f"{TINY_GEN}.yaml").write_text(
        f"task: {TINY_GEN}\n{common}dataset_kwargs:\n  data_files:\n    test: {folder.resolve() / 'tiny_gen.jsonl'}\n"
        "output_type: generate_until\ndoc_to_text: '{{prompt}}'\ndoc_to_target: '{{target}}'\n"
        "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 6\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    return folder


def run_lm_eval(
    model, tokenizer, tasks, include_path=None, limit=None, batch_size=1, num_fewshot=None, max_seq_lengths=None
):
    """Run lm-eval tasks on a loaded model; returns lm-eval's ``results`` dict (task -> metrics). RULER's tasks
    (``niah_*``, ``ruler_*``) build their prompts with a tokenizer they load by name and at ``max_seq_lengths``
    tokens: both go to them as task metadata (with a model object, lm-eval cannot tell them its name)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    metadata = {"tokenizer": tokenizer.name_or_path}
    if max_seq_lengths:
        metadata["max_seq_lengths"] = list(max_seq_lengths)
    manager = TaskManager(include_path=str(include_path) if include_path else None, metadata=metadata)
    out = simple_evaluate(
        model=lm, tasks=list(tasks), task_manager=manager, limit=limit, num_fewshot=num_fewshot, log_samples=False
    )
    return out["results"]


def metrics(results):
    """{task: {metric: value}} without lm-eval's stderr and alias entries."""
    return {
        task: {k.split(",")[0]: v for k, v in m.items() if "stderr" not in k and k != "alias"}
        for task, m in results.items()
    }
