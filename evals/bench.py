"""Speed and memory: prefill tokens/s and per-token decode latency at a range of context lengths,
decode-state bytes (recurrent state vs KV cache) and peak memory, teacher and student in one run.

Every number is measured after warm-up and repeated (the median is kept); the prompt is prefilled
in chunks through the model's own cache, as generation would.
"""

import gc
import statistics
import time

import torch


def cache_nbytes(cache):
    """Bytes held by a transformers cache: KV tensors, conv states and recurrent states."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            total += t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0
        for states in (getattr(layer, "conv_states", None), getattr(layer, "recurrent_states", None)):
            for t in (states or {}).values():
                total += t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0
    return total


def _rss():
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        return 0


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def prefill(model, context, prefill_chunk=2048, seed=0):
    """Prefill ``context`` random tokens through a fresh cache; returns (cache, next token, row of numbers)."""
    from transformers import DynamicCache

    device = model.device
    ids = torch.randint(0, model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(seed)).to(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rss0 = _rss()
    cache = DynamicCache(config=model.config)
    _sync(device)
    t0 = time.perf_counter()
    for start in range(0, context, prefill_chunk):
        out = model(ids[:, start : start + prefill_chunk], cache=cache, use_cache=True)
    _sync(device)
    seconds = time.perf_counter() - t0
    row = {
        "context": context,
        "prefill_tokens_per_s": context / seconds,
        "cache_bytes": cache_nbytes(cache),
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else max(_rss() - rss0, 0),
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process RSS growth during prefill",
    }
    return cache, out.logits[:, -1:].argmax(-1), row


@torch.no_grad()
def decode(model, cache, token, steps):
    """Seconds per token over ``steps`` single-token decode steps (greedy), and the last token."""
    _sync(model.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        token = model(token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
    _sync(model.device)
    return (time.perf_counter() - t0) / steps, token


def bench(model, contexts=(512, 2048, 8192, 16384), decode_tokens=16, repeats=3, prefill_chunk=2048):
    """One row per context length. Every context is prefilled first; the decode repeats then visit the
    contexts in turn, so a slow spell of a shared machine hits all lengths alike rather than one."""
    runs = [prefill(model, c, prefill_chunk) for c in contexts]
    tokens = [token for _, token, _ in runs]
    for i, (cache, _, _) in enumerate(runs):  # warm-up steps
        _, tokens[i] = decode(model, cache, tokens[i], 2)
    times = [[] for _ in contexts]
    for _ in range(repeats):
        for i, (cache, _, _) in enumerate(runs):
            seconds, tokens[i] = decode(model, cache, tokens[i], decode_tokens)
            times[i].append(seconds)
    rows = []
    for (_, _, row), per_repeat in zip(runs, times):
        row["decode_ms_per_token"] = 1000 * statistics.median(per_repeat)
        row["decode_ms_per_token_min"] = 1000 * min(per_repeat)
        row["decode_ms_per_token_all"] = [round(1000 * x, 3) for x in per_repeat]
        rows.append(row)
    return rows


def plot(results, path):
    """Decode ms/token and cache MiB against context length, one line per model; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in results.items():
        x = [r["context"] for r in rows]
        ax1.plot(x, [r["decode_ms_per_token"] for r in rows], marker="o", label=name)
        ax2.plot(x, [r["cache_bytes"] / 2**20 for r in rows], marker="o", label=name)
    for ax, label in ((ax1, "decode ms / token"), (ax2, "cache MiB")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context tokens")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
