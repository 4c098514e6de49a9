"""Perplexity on held-out or out-of-domain text (overall and per position), and agreement with the
teacher (next-token top-1 match and KL).

Per position: position ``p`` is the 0-based position of the input token whose next token is predicted,
so a window of T tokens has T-1 positions. A student that only learned its training length shows it
here: its loss relative to the teacher's grows with ``p`` (``QUALITY.md``).
"""

import math

import torch
import torch.nn.functional as F

from linearize.data.packing import HELDOUT_FRACTION, SPLITS, heldout_ids  # noqa: F401 (the evaluation windows)

DEFAULT_BUCKETS = (0, 64, 256, 1024, 4096)


def bucket_ranges(buckets, positions):
    """[(label, start, end)] for bucket edges ``buckets`` over ``positions`` positions (0 .. positions-1):
    consecutive edges a < b give the bucket a <= p < b, and the last bucket runs to the end of the
    window, so edges at or past the end are clipped and the last bucket is labelled with the real end
    (edges 0, 64, 256, 1024, 4096 over 2047 positions: 0-64, 64-256, 256-1024, 1024-2047)."""
    edges = sorted({int(b) for b in buckets if 0 <= int(b) < positions})
    bounds = edges + [positions] if edges else []
    return [(f"{a}-{b}", a, b) for a, b in zip(bounds, bounds[1:])]


def _token_nll(model, batch):
    """[B, T-1] next-token NLL (float64, on CPU) of ``batch`` [B, T], from one forward pass."""
    logits = model(batch.to(model.device), use_cache=False).logits[:, :-1]
    targets = batch[:, 1:].to(logits.device)
    rows = [F.cross_entropy(logits[i].float(), targets[i], reduction="none") for i in range(batch.shape[0])]
    return torch.stack(rows).double().cpu()


def _summary(nll_sum, count):
    nll = nll_sum / count
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": count}


@torch.no_grad()
def position_sums(model, ids, batch_size=4):
    """[T-1] float64: the summed next-token NLL at each position over all windows of ``ids`` [N, T]."""
    model.eval()
    sums = torch.zeros(ids.shape[1] - 1, dtype=torch.float64)
    for start in range(0, ids.shape[0], batch_size):
        sums += _token_nll(model, ids[start : start + batch_size]).sum(0)
    return sums


def position_nll(model, ids, batch_size=4):
    """[T-1] float64: the mean next-token NLL at each position over all windows of ``ids`` [N, T]."""
    return position_sums(model, ids, batch_size) / ids.shape[0]


def by_position(per_position, windows_count, buckets):
    """{label: {"perplexity", "nll", "tokens"}} from the per-position mean NLL [T-1] of ``windows_count``
    windows."""
    out = {}
    for label, a, b in bucket_ranges(buckets, len(per_position)):
        out[label] = _summary(per_position[a:b].sum().item() * windows_count, windows_count * (b - a))
    return out


def perplexity(model, ids, batch_size=4, buckets=None):
    """exp(mean next-token NLL) over ``ids`` [N, T]; returns {"perplexity", "nll", "tokens"}, and with
    ``buckets`` (edges, see ``bucket_ranges``) also "by_position" ({label: {"perplexity", "nll", "tokens"}})
    and "position_nll" (the mean NLL at each position, a list of T-1 floats). One forward pass per batch
    gives all of them."""
    sums = position_sums(model, ids, batch_size)
    result = _summary(sums.sum().item(), sums.numel() * ids.shape[0])
    if buckets is not None:
        mean = sums / ids.shape[0]
        result["by_position"] = by_position(mean, ids.shape[0], buckets)
        result["position_nll"] = mean.tolist()
    return result


def length_quality(
    teacher,
    student,
    tokenizer,
    data,
    seq_lens=(256, 2048),
    max_tokens=8192,
    buckets=DEFAULT_BUCKETS,
    split="all",
    batch_size=1,
    heldout_fraction=HELDOUT_FRACTION,
):
    """Teacher and student on the same windows of ``data`` at each window length in ``seq_lens``
    (``max_tokens`` per length, at least one window): overall perplexity, per position bucket, and the
    per-position mean NLL, with the student/teacher ratios. ``split="all"`` uses every document (for a
    corpus neither model was trained on), ``"heldout"`` the held-out split; the windows are
    ``data.packing.heldout_ids``'s, the ones ``linearize eval`` measures.

    Returns {"data", "split", "windows": {str(seq_len): {"teacher", "student", "ratio", "tokens",
    "by_position": {label: {"teacher", "student", "ratio"}}, "position_nll": {"teacher", "student"}}}}.
    """
    result = {"data": str(data), "split": split, "windows": {}}
    for seq_len in seq_lens:
        batch = heldout_ids(tokenizer, data, seq_len, max_tokens, split, heldout_fraction)
        t = perplexity(teacher, batch, batch_size, buckets)
        s = perplexity(student, batch, batch_size, buckets)
        pairs = {
            label: (t["by_position"][label]["perplexity"], s["by_position"][label]["perplexity"])
            for label in t["by_position"]
        }
        result["windows"][str(seq_len)] = {
            "teacher": t["perplexity"],
            "student": s["perplexity"],
            "ratio": s["perplexity"] / t["perplexity"],
            "tokens": t["tokens"],
            "windows": batch.shape[0],
            "by_position": {
                label: {"teacher": tp, "student": sp, "ratio": sp / tp} for label, (tp, sp) in pairs.items()
            },
            "position_nll": {"teacher": t["position_nll"], "student": s["position_nll"]},
        }
    return result


@torch.no_grad()
def agreement(student, teacher, ids, batch_size=4):
    """How closely the student follows the teacher: top-1 next-token agreement and KL(teacher || student)
    per token, over ``ids`` [N, T]."""
    student.eval(), teacher.eval()
    match, kl, count = 0, 0.0, 0
    for start in range(0, ids.shape[0], batch_size):
        batch = ids[start : start + batch_size]
        t = teacher(batch.to(teacher.device), use_cache=False).logits.float().log_softmax(-1).cpu()
        s = student(batch.to(student.device), use_cache=False).logits.float().log_softmax(-1).cpu()
        match += (t.argmax(-1) == s.argmax(-1)).sum().item()
        kl += F.kl_div(s, t, log_target=True, reduction="sum").item()
        count += batch.numel()
    return {"top1_agreement": match / count, "kl": kl / count, "tokens": count}
