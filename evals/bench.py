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
def bench_context(model, context, decode_tokens=16, repeats=3, prefill_chunk=2048, seed=0):
    """One context length: prefill ``context`` random tokens, then time single-token decode steps."""
    from transformers import DynamicCache

    device = model.device
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (1, context), generator=torch.Generator().manual_seed(seed)).to(device)
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
    prefill_s = time.perf_counter() - t0
    state_bytes = cache_nbytes(cache)
    token = out.logits[:, -1:].argmax(-1)
    for _ in range(2):  # warm-up steps
        token = model(token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
    per_repeat = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(decode_tokens):
            token = model(token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
        _sync(device)
        per_repeat.append((time.perf_counter() - t0) / decode_tokens)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else max(_rss() - rss0, 0)
    return {
        "context": context,
        "prefill_tokens_per_s": context / prefill_s,
        "decode_ms_per_token": 1000 * statistics.median(per_repeat),
        "decode_ms_per_token_all": [round(1000 * x, 3) for x in per_repeat],
        "cache_bytes": state_bytes,
        "peak_memory_bytes": peak,
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process RSS growth",
    }


def bench(model, contexts=(512, 2048, 8192, 16384), decode_tokens=16, repeats=3, prefill_chunk=2048):
    """Rows of ``bench_context`` for every context length (a warm-up run at the shortest first)."""
    bench_context(model, min(contexts), decode_tokens=2, repeats=1, prefill_chunk=prefill_chunk)
    return [bench_context(model, c, decode_tokens, repeats, prefill_chunk) for c in contexts]


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
