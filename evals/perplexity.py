"""Perplexity on held-out text, and agreement with the teacher (next-token top-1 match and KL)."""

import math

import torch
import torch.nn.functional as F

from linearize.convert.texts import load_texts, split_documents


def heldout_ids(tokenizer, data=None, seq_len=512, max_tokens=16384, heldout_fraction=0.05, seed=0):
    """[N, seq_len] token ids of held-out text: for the default corpus (or any ``data``), the seeded
    held-out split by document that training never sees, packed and cut to ``max_tokens``."""
    docs = load_texts(data)
    _, held = split_documents(docs, heldout_fraction, seed)
    eos = tokenizer.eos_token or ""
    ids = tokenizer(eos.join(held), add_special_tokens=False)["input_ids"][: max_tokens + 1]
    n = (len(ids) - 1) // seq_len
    if n == 0:
        raise ValueError(f"held-out text has {len(ids)} tokens, fewer than one sequence of {seq_len}")
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


@torch.no_grad()
def perplexity(model, ids, batch_size=4):
    """exp(mean next-token NLL) over ``ids`` [N, T]; returns {"perplexity", "nll", "tokens"}."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, ids.shape[0], batch_size):
        batch = ids[start : start + batch_size].to(model.device)
        logits = model(batch).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
        total += nll.item()
        count += batch[:, 1:].numel()
    return {"perplexity": math.exp(total / count), "nll": total / count, "tokens": count}


@torch.no_grad()
def agreement(student, teacher, ids, batch_size=4):
    """How closely the student follows the teacher: top-1 next-token agreement and KL(teacher || student)
    per token, over ``ids`` [N, T]."""
    student.eval(), teacher.eval()
    match, kl, count = 0, 0.0, 0
    for start in range(0, ids.shape[0], batch_size):
        batch = ids[start : start + batch_size]
        t = teacher(batch.to(teacher.device)).logits.float().log_softmax(-1).cpu()
        s = student(batch.to(student.device)).logits.float().log_softmax(-1).cpu()
        match += (t.argmax(-1) == s.argmax(-1)).sum().item()
        kl += F.kl_div(s, t, log_target=True, reduction="sum").item()
        count += batch.numel()
    return {"top1_agreement": match / count, "kl": kl / count, "tokens": count}
