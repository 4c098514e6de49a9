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
def prefill(model, context, prefill_chunk=2048, seed=0, batch=1, fresh=True):
    """Prefill ``batch`` rows of ``context`` random tokens through a fresh cache, in chunks of ``prefill_chunk``
    tokens (0 or None: one forward of the whole prompt); returns (cache, next tokens [batch, 1], row of numbers).
    Only the last position's logits are computed. ``fresh``: collect garbage and empty the CUDA allocator's cache
    first (a measurement repeated right after its warm-up leaves it warm)."""
    from transformers import DynamicCache

    device = model.device
    ids = torch.randint(0, model.config.vocab_size, (batch, context), generator=torch.Generator().manual_seed(seed)).to(
        device
    )
    if fresh:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    held = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    rss0 = _rss()
    cache = DynamicCache(config=model.config)
    chunk = prefill_chunk or context
    _sync(device)
    t0 = time.perf_counter()
    for start in range(0, context, chunk):
        out = model(ids[:, start : start + chunk], cache=cache, use_cache=True, logits_to_keep=1)
    _sync(device)
    seconds = time.perf_counter() - t0
    row = {
        "context": context,
        "batch": batch,
        "prefill_tokens_per_s": batch * context / seconds,
        "prefill_seconds": seconds,
        "cache_bytes": cache_nbytes(cache),
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else max(_rss() - rss0, 0),
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process RSS growth during prefill",
    }
    if device.type == "cuda":
        row["peak_memory_added_bytes"] = row["peak_memory_bytes"] - held  # above what the models etc. already held
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


def replicate(cache, batch):
    """A new cache holding ``batch`` copies of the one-row ``cache``, which stays as it was: the cache's structure
    deep-copied with its tensors shared, then transformers' own reorder (beam search's index_select) on the copy.
    What a converted model's layers keep per cache for their decode steps (``step_kept``, made for one row) is
    dropped. Serving engines prefill requests one by one and decode them together: this is that batch, at the cost
    of one prefill."""
    import copy

    shared = {}

    def collect(x, depth=0):
        if isinstance(x, torch.Tensor):
            shared[id(x)] = x
        elif depth < 4 and isinstance(x, dict):
            for v in x.values():
                collect(v, depth + 1)
        elif depth < 4 and isinstance(x, (list, tuple)):
            for v in x:
                collect(v, depth + 1)
        elif depth < 4 and hasattr(x, "__dict__") and not isinstance(x, type):
            for v in vars(x).values():
                collect(v, depth + 1)

    collect(cache)
    new = copy.deepcopy(cache, memo=dict(shared))
    device = next((t.device for t in shared.values()), torch.device("cpu"))
    new.reorder_cache(torch.zeros(batch, dtype=torch.long, device=device))
    for layer in new.layers:
        if hasattr(layer, "step_kept"):
            layer.step_kept = None
    return new


def is_oom(err):
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


@torch.no_grad()
def decode_batch(model, cache, token, batch, steps, warmup=1):
    """(seconds per decode step, peak bytes) for ``batch`` sequences that each continue the one-row ``cache`` (a
    copy: ``replicate``) from ``token`` [1, 1], after ``warmup`` untimed steps (a new batch size is a new shape)."""
    device = model.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    big = replicate(cache, batch)
    tokens = token.expand(batch, 1).contiguous()
    if warmup:
        _, tokens = decode(model, big, tokens, warmup)
    seconds, _ = decode(model, big, tokens, steps)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return seconds, peak


def serving(
    model,
    cache,
    token,
    steps=16,
    batch=None,
    max_batch=4096,
    probe_steps=2,
    probe_seconds=15.0,
    deadline=None,
    log=None,
):
    """Serving throughput: generated tokens/s of greedy decode at ``batch`` sequences, each continuing the one-row
    ``cache`` (``replicate``). ``batch=None``: the largest that fits, doubling from 1 until a probe (``probe_steps``
    timed steps) runs out of memory, takes longer than ``probe_seconds``, would pass ``deadline`` (a
    ``time.time()``) or passes ``max_batch``; then ``steps`` steps timed at it. Returns a row."""
    device = model.device
    per_sequence = cache_nbytes(cache)
    probes, failed, why = [], None, None

    def free():
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    search = batch is None
    if search:
        largest, b = 0, 1
        while True:
            if b > max_batch:
                why = f"max batch {max_batch}"
                break
            t0, seconds = time.time(), None
            try:
                seconds, peak = decode_batch(model, cache, token, b, probe_steps)
            except Exception as err:  # noqa: BLE001 (only out-of-memory is expected)
                if not is_oom(err):
                    raise
            if seconds is None:  # out of memory (freed out of the except block, whose traceback held the tensors)
                free()
                failed, why = b, "out of memory"
                probes.append({"batch": b, "fits": False})
                break
            took = time.time() - t0
            probes.append(
                {
                    "batch": b,
                    "fits": True,
                    "ms_per_step": round(1000 * seconds, 3),
                    "probe_s": round(took, 2),
                    "peak_memory_bytes": peak,
                }
            )
            if log:
                log(f"  serving probe: batch {b}: {1000 * seconds:.1f} ms/step ({took:.1f}s)")
            largest = b
            if took > probe_seconds:
                why = f"a probe took {took:.1f}s > {probe_seconds:g}s"
                break
            if deadline is not None and time.time() + 3 * took > deadline:
                why = "time left"
                break
            b *= 2
        if not largest:
            return {
                "largest": 0,
                "first_not_fitting": failed,
                "stopped_by": why,
                "probes": probes,
                "cache_bytes_per_sequence": per_sequence,
            }
        batch = largest
    if device.type == "cuda":
        torch.cuda.empty_cache()
    seconds = None
    try:
        seconds, peak = decode_batch(model, cache, token, batch, steps, warmup=2)
    except Exception as err:  # noqa: BLE001
        if search or not is_oom(err):
            raise
    free()
    if seconds is None:  # the batch asked for does not fit
        return {
            "batch": batch,
            "largest": None,
            "first_not_fitting": batch,
            "stopped_by": "out of memory",
            "probes": probes,
            "cache_bytes_per_sequence": per_sequence,
        }
    return {
        "batch": batch,
        "largest": batch if search else None,
        "first_not_fitting": failed,
        "stopped_by": why,
        "tokens_per_s": batch / seconds,
        "ms_per_step": 1000 * seconds,
        "steps": steps,
        "cache_bytes_per_sequence": per_sequence,
        "peak_memory_bytes": peak,
        "probes": probes,
    }


def bench(
    model,
    contexts=(512, 2048, 8192, 16384),
    decode_tokens=16,
    repeats=3,
    prefill_chunk=2048,
    batch=None,
    max_batch=4096,
    probe_seconds=15.0,
):
    """One row per context length. Every context is prefilled first; the decode repeats then visit the
    contexts in turn, so a slow spell of a shared machine hits all lengths alike rather than one.

    ``batch``: serving throughput too, each row's ``serving``: generated tokens/s of ``batch`` sequences (a whole
    number), or of the largest batch that fits ("max", up to ``max_batch``), each continuing that context's prompt
    (``serving``: the batch's caches are copies of the one prefilled)."""
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
    if batch is not None:
        for (cache, _, row), token in zip(runs, tokens):
            row["serving"] = serving(
                model,
                cache,
                token,
                steps=decode_tokens,
                batch=None if batch == "max" else batch,
                max_batch=max_batch,
                probe_seconds=probe_seconds,
            )
    return rows


def plot(results, path):
    """Decode ms/token and cache MiB against context length, one line per model; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    serving = any(r.get("serving", {}).get("tokens_per_s") for rows in results.values() for r in rows)
    fig, axes = plt.subplots(1, 3 if serving else 2, figsize=(16 if serving else 11, 4))
    panels = [(axes[0], "decode ms / token (batch 1)"), (axes[1], "cache MiB")]
    for name, rows in results.items():
        x = [r["context"] for r in rows]
        axes[0].plot(x, [r["decode_ms_per_token"] for r in rows], marker="o", label=name)
        axes[1].plot(x, [r["cache_bytes"] / 2**20 for r in rows], marker="o", label=name)
        if serving:
            axes[2].plot(
                x, [r.get("serving", {}).get("tokens_per_s", float("nan")) for r in rows], marker="o", label=name
            )
    if serving:
        panels.append((axes[2], "generated tokens / s (serving batch)"))
    for ax, label in panels:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context tokens")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
