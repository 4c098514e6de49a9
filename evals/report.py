"""Results as JSON and markdown: one table per run, and a comparison that puts teacher and students
side by side (quality columns, then speed and memory), ready to paste into a model card."""

import json
from pathlib import Path


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def flatten_quality(result):
    """{column: value} for the quality part of an eval result."""
    q = result.get("quality", {})
    cols = {}
    for key in ("perplexity", "top1_agreement", "kl"):
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


def quality_table(results):
    columns = []
    for r in results:
        columns += [c for c in flatten_quality(r) if c not in columns]
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for r in results:
        cols = flatten_quality(r)
        lines.append(f"| {r['name']} | " + " | ".join(_fmt(cols.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def speed_table(results):
    """Decode ms/token per context (and the ratio to the first model, the teacher), cache MiB."""
    rows = [r for r in results if r.get("speed")]
    if not rows:
        return ""
    contexts = [s["context"] for s in rows[0]["speed"]]
    ref = {s["context"]: s["decode_ms_per_token"] for s in rows[0]["speed"]}
    head = ["model"] + [f"decode ms @{c}" for c in contexts] + [f"cache MiB @{c}" for c in contexts] + \
           [f"prefill tok/s @{contexts[-1]}"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        by = {s["context"]: s for s in r["speed"]}
        decode = [f"{by[c]['decode_ms_per_token']:.1f} ({by[c]['decode_ms_per_token'] / ref[c]:.2f}x)" if c in by else ""
                  for c in contexts]
        cache = [f"{by[c]['cache_bytes'] / 2**20:.1f}" if c in by else "" for c in contexts]
        prefill = f"{by[contexts[-1]]['prefill_tokens_per_s']:.0f}" if contexts[-1] in by else ""
        lines.append("| " + " | ".join([r["name"], *decode, *cache, prefill]) + " |")
    return "\n".join(lines)


def comparison(results):
    """Markdown: quality table, then speed/memory table (ratios are to the first result)."""
    parts = []
    if any(r.get("quality") for r in results):
        parts.append(quality_table(results))
    speed = speed_table(results)
    if speed:
        parts.append(speed)
    return "\n\n".join(parts) + "\n"


def write(results, out_dir, stem):
    """Write ``stem.json`` (all results) and ``stem.md`` (the comparison) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{stem}.md").write_text(comparison(results))
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
