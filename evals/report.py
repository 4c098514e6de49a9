"""Results as JSON and markdown: one table per run, and a comparison that puts teacher and students
side by side (quality columns, then speed and memory), ready to paste into a model card."""

import json
import os
from pathlib import Path


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def flatten_quality(result):
    """{column: value} for the quality part of an eval result."""
    q = result.get("quality", {})
    cols = {}
    for key in ("perplexity", "perplexity_ratio", "top1_agreement", "kl"):
        if key in q:
            cols[key] = q[key]
    for kind in ("passkey", "mqar"):
        for n, acc in q.get(kind, {}).items():
            cols[f"{kind}@{n}"] = acc
    for task, metrics in q.get("lm_eval", {}).items():
        for metric, value in metrics.items():
            if isinstance(value, (int, float)) and metric != "sample_len":
                cols[f"{task}/{metric}"] = value
    return cols


def _row_name(result):
    return f"{result['name']} (teacher)" if result.get("role") == "teacher" else result["name"]


def quality_table(results):
    columns = []
    for r in results:
        columns += [c for c in flatten_quality(r) if c not in columns]
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for r in results:
        cols = flatten_quality(r)
        lines.append(f"| {_row_name(r)} | " + " | ".join(_fmt(cols.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def speed_table(results):
    """Decode ms/token per context (and the ratio to the first model, the teacher), cache MiB."""
    rows = [r for r in results if r.get("speed")]
    if not rows:
        return ""
    contexts = [s["context"] for s in rows[0]["speed"]]
    ref = {s["context"]: s["decode_ms_per_token"] for s in rows[0]["speed"]}
    head = (
        ["model"]
        + [f"decode ms @{c}" for c in contexts]
        + [f"cache MiB @{c}" for c in contexts]
        + [f"prefill tok/s @{contexts[-1]}"]
    )
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        by = {s["context"]: s for s in r["speed"]}
        decode = [
            f"{by[c]['decode_ms_per_token']:.1f} ({by[c]['decode_ms_per_token'] / ref[c]:.2f}x)" if c in by else ""
            for c in contexts
        ]
        cache = [f"{by[c]['cache_bytes'] / 2**20:.1f}" if c in by else "" for c in contexts]
        prefill = f"{by[contexts[-1]]['prefill_tokens_per_s']:.0f}" if contexts[-1] in by else ""
        lines.append("| " + " | ".join([r["name"], *decode, *cache, prefill]) + " |")
    serving = [r for r in rows if any("serving" in s for s in r["speed"])]
    if serving:  # `bench --batch`: generated tokens/s at the batch (and the ratio to the first model's)
        ref = {s["context"]: s["serving"].get("tokens_per_s") for s in serving[0]["speed"] if "serving" in s}
        head = ["model"] + [f"serving tok/s @{c} (batch)" for c in contexts]
        lines += ["", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for r in serving:
            by = {s["context"]: s.get("serving") for s in r["speed"]}
            lines.append(
                "| " + " | ".join([r["name"]] + [_serving_cell(by.get(c), ref.get(c)) for c in contexts]) + " |"
            )
    return "\n".join(lines)


def _serving_cell(row, ref):
    if not row:
        return ""
    if not row.get("tokens_per_s"):
        return f"none fits ({row.get('stopped_by')})"
    bound = "≥ " if row.get("largest") and row.get("first_not_fitting") is None else ""
    ratio = f", {row['tokens_per_s'] / ref:.2f}x" if ref else ""
    return f"{row['tokens_per_s']:,.0f} ({bound}{row['batch']}{ratio})"


def _reference(results):
    """The result ratios are taken to: the teacher where there is one, else the first."""
    return next((r for r in results if r.get("role") == "teacher"), results[0])


def position_table(results):
    """Perplexity per position bucket, one row per model, with the ratio to the teacher (or the first
    result) beside each student's number; empty when no result has by-position numbers."""
    rows = [r for r in results if r.get("quality", {}).get("by_position")]
    if not rows:
        return ""
    ref = _reference(rows)["quality"]["by_position"]
    labels = list(ref)
    for r in rows:
        labels += [b for b in r["quality"]["by_position"] if b not in labels]
    lines = ["| model | " + " | ".join(f"ppl @{b}" for b in labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for r in rows:
        by = r["quality"]["by_position"]
        cells = []
        for b in labels:
            if b not in by:
                cells.append("")
            elif r is _reference(rows) or b not in ref:
                cells.append(_fmt(by[b]["perplexity"]))
            else:
                cells.append(f"{_fmt(by[b]['perplexity'])} ({by[b]['perplexity'] / ref[b]['perplexity']:.2f}x)")
        lines.append(f"| {_row_name(r)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_positions(curves, path, title=None, bins=40):
    """Next-token loss against position (log x-axis), one line per model in ``curves`` ({name: per-position
    mean NLL}), averaged within log-spaced position bins so the curve is readable; with two or more
    curves, a lower panel shows each one's perplexity ratio to the first. Saved as PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    binned = {}
    for name, nll in curves.items():
        nll = np.asarray(nll, dtype=np.float64)
        # x = tokens seen when predicting (position + 1), so position 0 sits at 1 on the log axis
        edges = np.unique(np.round(np.geomspace(1, len(nll) + 1, bins + 1)).astype(int))
        x = np.array([np.sqrt(a * (b - 1)) for a, b in zip(edges, edges[1:])])
        y = np.array([nll[a - 1 : b - 1].mean() for a, b in zip(edges, edges[1:])])
        binned[name] = (x, y)
    many = len(binned) > 1
    fig, axes = plt.subplots(
        2 if many else 1,
        1,
        figsize=(8, 6.5 if many else 4.5),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [2, 1]} if many else None,
    )
    ax = axes[0][0]
    for name, (x, y) in binned.items():
        ax.plot(x, y, marker=".", label=name)
    ax.set_ylabel("next-token loss (nats)")
    ax.set_title(title or "Loss by position (mean over windows, log-spaced bins)")
    if many:
        ref_name, (rx, ry) = next(iter(binned.items()))
        low = axes[1][0]
        for name, (x, y) in list(binned.items())[1:]:
            n = min(len(x), len(rx))
            low.plot(x[:n], np.exp(y[:n] - ry[:n]), marker=".", label=f"{name} / {ref_name}")
        low.axhline(1.0, color="grey", lw=0.8)
        low.set_ylabel("perplexity ratio")
        low.legend()
    for row in axes:
        row[0].set_xscale("log")
        row[0].grid(alpha=0.3, which="both")
    axes[-1][0].set_xlabel("position (tokens of context, log scale)")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def comparison(results):
    """Markdown: quality table, per-position table, then speed/memory table (ratios are to the teacher,
    or the first result)."""
    parts = []
    if any(r.get("quality") for r in results):
        parts.append(quality_table(results))
    positions = position_table(results)
    if positions:
        parts.append(positions)
    speed = speed_table(results)
    if speed:
        parts.append(speed)
    return "\n\n".join(parts) + "\n"


def write(results, out_dir, stem):
    """Write ``stem.json`` (all results) and ``stem.md`` (the comparison) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in ((f"{stem}.json", json.dumps(results, indent=2) + "\n"), (f"{stem}.md", comparison(results))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)  # a reader never sees half a file
    return out / f"{stem}.json", out / f"{stem}.md"


def load(paths):
    """Results from JSON files written by ``write`` (each holds a list of results). A model that
    appears in several files (the teacher of each run) is kept once, from the first file."""
    results, seen = [], set()
    for p in paths:
        data = json.loads(Path(p).read_text())
        for r in data if isinstance(data, list) else [data]:
            if r["name"] not in seen:
                seen.add(r["name"])
                results.append(r)
    return results
