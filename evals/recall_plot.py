"""The recall suite's results (``recall.text_recall``) as markdown tables and as a depth x length grid per
model (a PNG, one panel per task), in the style of ``evals.report``."""

import os
import re
from pathlib import Path


def grid(recall, task):
    """(depth labels, lengths, rows): ``rows[i][j]`` is the score at depth bucket i and length j (None where
    that cell was not measured): the numbers the PNG shows, read from the JSON result."""
    depths, lengths = recall["depth_buckets"], [str(n) for n in recall["lengths"]]
    scores = recall["scores"].get(task, {})
    rows = [
        [scores[n]["by_depth"][d]["score"] if n in scores and d in scores[n]["by_depth"] else None for n in lengths]
        for d in depths
    ]
    return depths, lengths, rows


def _row_name(result):
    return f"{result['name']} (teacher)" if result.get("role") == "teacher" else result["name"]


def recall_table(results):
    """Markdown: per task, one row per model and length: the score over every depth, then per depth
    bucket, the prompts per cell, and each student's score over the teacher's."""
    rows = [r for r in results if r.get("quality", {}).get("recall")]
    if not rows:
        return ""
    first = rows[0]["quality"]["recall"]
    teacher = next((r for r in rows if r.get("role") == "teacher"), None)
    depths = first["depth_buckets"]
    haystack = first["haystack"] if isinstance(first["haystack"], str) else ", ".join(first["haystack"])
    parts = [
        f"Recall in ordinary text (haystack: {haystack}; {first['prompts_per_cell']} prompts per depth bucket, "
        f"seed {first['seed']}; exact match of the value in greedy output"
        f"{'; each text given twice (--recall-read-twice)' if first.get('read_twice') else ''})"
    ]
    for task in first["tasks"]:
        head = ["model", "length", "all"] + [f"depth {d}" for d in depths] + ["prompts", "/ teacher"]
        lines = [f"**{task}**", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for r in rows:
            for n, cell in r["quality"]["recall"]["scores"].get(task, {}).items():
                ref = (
                    teacher["quality"]["recall"]["scores"].get(task, {}).get(n)
                    if teacher and r is not teacher
                    else None
                )
                ratio = f"{cell['score'] / ref['score']:.2f}x" if ref and ref["score"] > 0 else ""
                cells = [_row_name(r), n, f"{cell['score']:.2f}"]
                cells += [f"{cell['by_depth'][d]['score']:.2f}" if d in cell["by_depth"] else "" for d in depths]
                lines.append("| " + " | ".join(cells + [str(cell["n"]), ratio]) + " |")
        kinds = [
            (r, n, c["by_kind"])
            for r in rows
            for n, c in r["quality"]["recall"]["scores"].get(task, {}).items()
            if "by_kind" in c
        ]
        if kinds:
            names = sorted({k for _, _, by in kinds for k in by})
            lines += [
                "",
                "| model | length | " + " | ".join(f"{k} values" for k in names) + " |",
                "|---" * (len(names) + 2) + "|",
            ]
            for r, n, by in kinds:
                lines.append(
                    f"| {_row_name(r)} | {n} | "
                    + " | ".join(f"{by[k]['score']:.2f} ({by[k]['n']})" if k in by else "" for k in names)
                    + " |"
                )
        if task == "niah_multikey":
            lines += _distractor_lines(rows)
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _distractor_lines(rows):
    """Of each model's misses on niah_multikey, how many answered a distractor's value (the wrong key matched)
    rather than something else (the value misread or not found)."""
    lines = []
    for r in rows:
        for n in r["quality"]["recall"]["scores"].get("niah_multikey", {}):
            misses = [
                o
                for o in r["quality"]["recall"].get("outputs", [])
                if o["task"] == "niah_multikey" and str(o["length"]) == n and o["score"] < 1
            ]
            if misses:
                wrong_key = sum(bool(o["distractors_given"]) for o in misses)
                lines.append(
                    f"- {_row_name(r)} at {n}: {wrong_key} of its {len(misses)} misses gave a distractor's value"
                )
    return [""] + lines if lines else []


def plot_recall(result, path, title=None):
    """One PNG for one model's recall result: a panel per task, depth buckets down, lengths across, each
    cell coloured and labelled with its score. Saved atomically; returns {task: rows} as ``grid`` reads
    them from the result (what the cells show)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    recall = result["quality"]["recall"]
    tasks = recall["tasks"]
    shown = {}
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(2.2 + 2.0 * len(tasks) + 0.5 * len(recall["lengths"]), 3.6), squeeze=False
    )
    for k, (ax, task) in enumerate(zip(axes[0], tasks)):
        depths, lengths, rows = grid(recall, task)
        shown[task] = rows
        values = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
        image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                ax.text(j, i, "" if v is None else f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(lengths)), lengths)
        ax.set_yticks(range(len(depths)), depths if k == 0 else [])  # the panels share their rows: one set of labels
        ax.set_xlabel("context length (tokens)")
        ax.set_title(task, fontsize=10)
    axes[0][0].set_ylabel("needle depth")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="score")
    fig.suptitle(title or f"Recall in ordinary text: {_row_name(result)}", fontsize=11)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return shown


def png_name(result):
    """recall-<teacher|student|model>-<name>.png, the name made safe for a file (model: a base evaluated alone)."""
    role = result.get("role") or "model"
    return f"recall-{role}-{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(str(result['name'])).name)[:60]}.png"


def write_recall(results, out_dir, md_name="eval.md"):
    """A PNG per model with a recall result, and the recall tables appended to ``out_dir/md_name`` (when
    it exists; rewritten atomically). Returns the PNG paths."""
    out = Path(out_dir)
    paths = []
    for r in results:
        if r.get("quality", {}).get("recall"):
            paths.append(out / png_name(r))
            plot_recall(r, paths[-1])
    table = recall_table(results)
    md = out / md_name
    if table and md.exists():
        tmp = out / f".{md_name}.tmp"
        tmp.write_text(md.read_text().rstrip("\n") + "\n\n" + table)
        os.replace(tmp, md)
    return paths
