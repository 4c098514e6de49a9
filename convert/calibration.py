"""Calibration: measure the base's attention on text to decide which heads and layers to convert.

Recency of a head = the share of its softmax attention mass that falls on the last ``window`` keys
(the query itself included), averaged over query positions that have older keys to attend to
(t >= window) and over samples. A local head scores near 1; a head that reads the first token or
retrieves from far back scores near 0. RecurFormer turns high-recency heads into Mamba heads; the
``auto:N`` plan keeps softmax attention in the N layers whose heads are least local.
"""

import random

import torch

from linearize.data.texts import stdlib_documents

DEFAULT_WINDOW = 64
DEFAULT_THRESHOLD = 0.9


def calibration_ids(tokenizer, texts=None, num_samples=8, seq_len=256, seed=0):
    """[num_samples, seq_len] token ids: the texts tokenised, cut into windows, a seeded choice of them."""
    texts = stdlib_documents() if texts is None else list(texts)
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    windows = [ids[i : i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)]
    if len(windows) < num_samples:
        raise ValueError(f"calibration text too short: {len(windows)} windows of {seq_len} tokens, need {num_samples}")
    chosen = sorted(random.Random(seed).sample(range(len(windows)), num_samples))
    return torch.tensor([windows[i] for i in chosen])


THINGS = ("archive", "server", "ledger", "vault", "garden", "engine", "harbor", "library")


def retrieval_probes(tokenizer, texts=None, num_samples=4, seq_len=512, seed=0, distractors=0):
    """Retrieval probes on calibration text: (ids [N, seq_len], answer [N, seq_len] bool). Each window of the
    texts gets a fact ("The code of the vault is 48213.") at a seeded depth and ends with the question and its
    answer; ``answer`` marks the positions whose next token is part of the answer, where a layer that retrieves
    from far back matters. ``distractors`` more facts about other things, at their own depths, make the probe
    ask for a key match, not only for the one number in the text. The wording and the text (Python's
    documentation) differ from the recall evaluation's (``evals.recall``: its prompts and haystacks stay
    unseen)."""
    if not 0 <= distractors < len(THINGS):
        raise ValueError(f"distractors must be from 0 to {len(THINGS) - 1}, got {distractors!r}")
    rng = random.Random(seed)
    texts = stdlib_documents() if texts is None else list(texts)
    text_ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    enc = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    ids, answer, start = [], [], 0
    for _ in range(num_samples):
        # rng.choice for a single fact: the probes (and so the plans) of distractors=0 stay those of before.
        things = rng.sample(THINGS, 1 + distractors) if distractors else [rng.choice(THINGS)]
        values = [str(rng.randrange(10000, 100000)) for _ in things]
        facts = [enc(f" The code of the {t} is {v}. ") for t, v in zip(things, values)]
        question = enc(f"\nQuestion: what is the code of the {things[0]}? Answer: the code of the {things[0]} is")
        value_ids = enc(f" {values[0]}")
        filler = seq_len - sum(map(len, facts)) - len(question) - len(value_ids)
        if filler < 16 or start + filler > len(text_ids):
            raise ValueError(f"calibration text too short for {num_samples} retrieval probes of {seq_len} tokens")
        depths = [rng.randint(filler // 20, filler * 17 // 20) for _ in facts]
        window = text_ids[start : start + filler]
        start += filler
        row, at = [], 0
        for depth, fact in sorted(zip(depths, facts), key=lambda df: df[0]):
            row += window[at:depth] + fact
            at = depth
        row += window[at:] + question + value_ids
        ids.append(row)
        answer.append([False] * (seq_len - len(value_ids) - 1) + [True] * len(value_ids) + [False])
    return torch.tensor(ids), torch.tensor(answer)


def attention_recency(probs, window=DEFAULT_WINDOW):
    """probs [B, H, T, T] causal attention weights -> [H] mean share of mass on the last ``window`` keys,
    over queries t >= window (every row if the sequence is shorter than the window)."""
    T = probs.shape[-1]
    t = torch.arange(T, device=probs.device)
    recent = (t[None, :] <= t[:, None]) & (t[None, :] > t[:, None] - window)  # [T, T]
    share = (probs.float() * recent).sum(-1)  # [B, H, T]
    rows = share[..., window:] if T > window else share
    return rows.mean(dim=(0, 2))


@torch.no_grad()
def head_recency(model, ids, window=DEFAULT_WINDOW, batch_size=2):
    """[layers, heads] recency of every attention head of a base model on ``ids`` [N, T]."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")  # the only implementation that returns attention weights
    try:
        totals = None
        for start in range(0, ids.shape[0], batch_size):
            batch = ids[start : start + batch_size].to(model.device)
            out = model(batch, output_attentions=True)
            scores = torch.stack([attention_recency(a, window) for a in out.attentions]) * batch.shape[0]
            totals = scores if totals is None else totals + scores
        return (totals / ids.shape[0]).cpu()
    finally:
        model.set_attn_implementation(previous)


def recency_table(recency, threshold=None):
    """A plain-text table, one row per layer: each head's recency (marked * at or above the threshold)."""
    H = recency.shape[1]
    lines = ["layer  mean   " + " ".join(f"h{h:<4d}" for h in range(H))]
    for i, row in enumerate(recency.tolist()):
        cells = " ".join(f"{r:.2f}{'*' if threshold is not None and r >= threshold else ' '}" for r in row)
        lines.append(f"{i:>5d}  {sum(row) / H:.3f}  {cells}")
    return "\n".join(lines)


def rank_layers(recency, n):
    """The n layers whose heads are least local (lowest mean recency): where softmax attention matters most.
    Ties break toward the lower index, so the plan is deterministic."""
    means = recency.mean(-1).tolist()
    order = sorted(range(len(means)), key=lambda i: (means[i], i))
    return sorted(order[:n])


def fresh_mixer(target_cls, attention, config, layer_idx, **settings):
    """A mixer of ``target_cls`` around ``attention``'s projections, its new parameters at their init (built on
    the meta device and materialised by ``from_attention``: no throwaway projections)."""
    mixer = target_cls.from_attention(attention, config, layer_idx, **settings)
    return mixer.to(attention.q_proj.weight.device, attention.q_proj.weight.dtype).eval()


@torch.no_grad()
def layer_kl(model, ids, make_mixer, batch_size=2, positions=None):
    """[layers] KL(base || base with only that layer's attention replaced by ``make_mixer(attention, i)``),
    per token, on ``ids`` [N, T] (only where ``positions`` [N, T] is True, if given): how much the model's output
    depends on that layer keeping softmax attention. A cheap, one-layer-at-a-time form of KL-guided layer
    selection (Li et al., 2026, restore one softmax layer at a time in a linearized model and keep those whose
    return cuts the KL most)."""
    import torch.nn.functional as F

    if positions is None:
        positions = torch.ones(ids.shape, dtype=torch.bool)
    batches = [ids[s : s + batch_size].to(model.device) for s in range(0, ids.shape[0], batch_size)]
    where = [positions[s : s + batch_size].to(model.device) for s in range(0, ids.shape[0], batch_size)]
    reference = [model(b, use_cache=False).logits.float().log_softmax(-1)[w] for b, w in zip(batches, where)]
    out = []
    for i, layer in enumerate(model.model.layers):
        attention = layer.self_attn
        mixer = make_mixer(attention, i)

        def swap(module, args, kwargs, output):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            return (mixer(hidden, position_embeddings=kwargs.get("position_embeddings"))[0], *output[1:])

        handle = attention.register_forward_hook(swap, with_kwargs=True)
        try:
            total = sum(
                F.kl_div(
                    model(b, use_cache=False).logits.float().log_softmax(-1)[w], ref, log_target=True, reduction="sum"
                ).item()
                for b, w, ref in zip(batches, where, reference)
            )
        finally:
            handle.remove()
        out.append(total / int(positions.sum()))
    return torch.tensor(out)


def rank_by_kl(kl, n):
    """The n layers whose lone conversion costs the most KL; ties break toward the lower index."""
    order = sorted(range(len(kl)), key=lambda i: (-float(kl[i]), i))
    return sorted(order[:n])
