"""Mamba's weight mapping, the recency metric, RecurFormer plans and auto:N layer plans."""

import math
import re

import pytest
import torch

from linearize.convert.calibration import attention_recency, head_recency, rank_layers, recency_table
from linearize.convert.convert import convert
from linearize.convert.mamba import MambaMixer
from linearize.convert.plan import PlanError, parse_keep_attention

from helpers import assert_close, tiny_base


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_mamba_init_maps_attention_weights(family):
    """dt forced to 1 with no decay, no conv, no gate and D = 0: the Mamba mixer computes unnormalised
    causal linear attention of the attention's own q (C), k (B), v (x), through o_proj."""
    base = tiny_base(family)
    attn = base.model.layers[1].self_attn
    mixer = MambaMixer.from_attention(attn, base.config, 1, conv_kernel=0, gate=False)
    with torch.no_grad():
        mixer.dt_proj.weight.zero_()
        mixer.dt_bias.fill_(math.log(math.e - 1))  # softplus = 1
        mixer.A_log.fill_(-float("inf"))  # A = 0: decay exp(0) = 1
        mixer.D.zero_()
    x = torch.randn(2, 13, base.config.hidden_size, generator=torch.Generator().manual_seed(0))
    cos_sin = base.model.rotary_emb(x, torch.arange(13)[None])
    with torch.no_grad():
        out, _ = mixer(x, position_embeddings=cos_sin)
        B, T, D = 2, 13, mixer.head_dim
        q = attn.q_proj(x).view(B, T, -1, D)
        k = attn.k_proj(x).view(B, T, -1, D)
        v = attn.v_proj(x).view(B, T, -1, D)
        if getattr(attn, "q_norm", None) is not None:
            q, k = attn.q_norm(q), attn.k_norm(k)
        groups = q.shape[2] // k.shape[2]
        k, v = k.repeat_interleave(groups, 2), v.repeat_interleave(groups, 2)
        scores = torch.einsum("bthd,bshd->bhts", q, k).tril()
        expected = attn.o_proj(torch.einsum("bhts,bshd->bthd", scores, v).reshape(B, T, -1))
    assert_close(out, expected, 1e-4)


def test_recency_ranks_local_above_first_token_heads():
    T, w = 40, 8
    local = torch.eye(T)  # each query attends to itself
    first = torch.zeros(T, T)
    first[:, 0] = 1.0  # an attention sink
    uniform = torch.ones(T, T).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    probs = torch.stack([first, uniform, local])[None]  # [1, 3 heads, T, T]
    r = attention_recency(probs, window=w)
    assert r[2] == 1.0 and r[0] == 0.0
    assert r[0] < r[1] < r[2]
    assert abs(r[1].item() - (w / torch.arange(w + 1, T + 1)).mean().item()) < 1e-6


def test_head_recency_matches_the_metric_on_real_attention():
    base = tiny_base("llama")
    ids = torch.randint(3, 128, (3, 30), generator=torch.Generator().manual_seed(0))
    rec = head_recency(base, ids, window=8, batch_size=2)
    assert rec.shape == (3, 6) and ((rec >= 0) & (rec <= 1)).all()
    base.set_attn_implementation("eager")
    attn = base(ids, output_attentions=True).attentions[1]
    assert_close(rec[1], attention_recency(attn, 8), 1e-5)
    assert base.config._attn_implementation == "eager"
    assert "layer" in recency_table(rec, 0.5) and "*" in recency_table(rec, 0.0)


def test_rank_layers_keeps_the_least_local():
    rec = torch.tensor([[0.9, 0.8], [0.2, 0.4], [0.95, 0.99], [0.5, 0.1]])
    assert rank_layers(rec, 2) == [1, 3]
    assert rank_layers(rec, 0) == []


def test_auto_plan_is_deterministic_and_saved(tmp_path):
    from transformers import AutoModelForCausalLM

    base = tiny_base("llama", layers=4)
    ids = torch.randint(3, 128, (2, 40), generator=torch.Generator().manual_seed(3))
    a = convert(base, "hedgehog", keep_attention="auto:2", calibration=ids, recency_window=8)
    b = convert(base, "hedgehog", keep_attention="auto:2", calibration=ids, recency_window=8)
    kept = a.config.linearize["keep_attention"]
    assert kept == b.config.linearize["keep_attention"] and len(kept) == 2
    evidence = a.config.linearize["plan_evidence"]
    assert evidence["kept_layers"] == kept and len(evidence["recency"]) == 4
    means = [sum(r) / len(r) for r in evidence["recency"]]
    assert max(means[i] for i in kept) <= min(means[i] for i in range(4) if i not in kept)
    a.save_pretrained(tmp_path)
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.linearize["plan_evidence"] == evidence


def test_auto_plan_spec_errors():
    with pytest.raises(PlanError, match="auto:N needs a whole number N from 0 to 4"):
        parse_keep_attention("auto:9", 4)
    with pytest.raises(ValueError, match="calibration"):
        convert(tiny_base("llama"), "hedgehog", keep_attention="auto:1")


def test_recurformer_converts_high_recency_heads_only():
    base = tiny_base("qwen3")
    ids = torch.randint(3, 128, (2, 40), generator=torch.Generator().manual_seed(4))
    rec = head_recency(base, ids, window=8)
    threshold = rec.median().item()
    model = convert(base, "recurformer", calibration=ids, recency_window=8, recency_threshold=threshold)
    for i, settings in enumerate(model.config.mixers):
        heads = [h for h in range(6) if rec[i, h] >= threshold]
        assert (settings is None) == (not heads)
        assert settings is None or settings["mamba_heads"] == heads
    # The cache keeps KV only for the KV heads that some softmax head still reads (GQA groups).
    state, kv = model.cache_bytes(4096)
    expected = 0
    for i, settings in enumerate(model.config.mixers):
        softmax_heads = range(6) if settings is None else [h for h in range(6) if h not in settings["mamba_heads"]]
        kv_heads = {h // 3 for h in softmax_heads}
        mamba = 0 if settings is None else len(settings["mamba_heads"]) * 12 * 12 * 4
        expected += mamba + 2 * 4096 * len(kv_heads) * 12 * 4
    assert state == expected and kv == 3 * 2 * 4096 * 2 * 12 * 4
    every_head = convert(base, "recurformer", calibration=ids, recency_window=8, recency_threshold=0.0)
    assert (
        every_head.cache_bytes(4096)[0] == 3 * 6 * 12 * 12 * 4
        and every_head.config.layer_types == ["linear_attention"] * 3
    )


def test_recurformer_fraction_converts_that_share_of_heads():
    base = tiny_base("llama")
    ids = torch.randint(3, 128, (2, 40), generator=torch.Generator().manual_seed(4))
    model = convert(base, "recurformer", calibration=ids, recency_window=8, recency_fraction=0.5)
    converted_heads = sum(len(m["mamba_heads"]) for m in model.config.mixers if m)
    assert converted_heads == 9  # half of 3 layers x 6 heads (no ties in random attention)
    assert model.config.linearize["plan_evidence"]["fraction"] == 0.5


def test_kl_ranked_auto_plan_is_deterministic_saved_and_right(tmp_path):
    """auto:N ranked by KL keeps the layers whose lone conversion moves the output most, the same for the
    same calibration, and saves the per-layer KL; a layer made to matter more is kept."""
    from transformers import AutoModelForCausalLM

    base = tiny_base("llama", layers=4)
    ids = torch.randint(3, 128, (2, 40), generator=torch.Generator().manual_seed(3))
    a = convert(base, "lolcats", keep_attention="auto:2", rank_by="kl", calibration=ids, window=4)
    b = convert(base, "lolcats", keep_attention="auto:2", rank_by="kl", calibration=ids, window=4)
    evidence = a.config.linearize["plan_evidence"]
    kept = a.config.linearize["keep_attention"]
    assert kept == b.config.linearize["keep_attention"] and len(kept) == 2
    assert evidence["method"] == "kl" and evidence["kept_layers"] == kept and len(evidence["kl"]) == 4
    assert min(evidence["kl"][i] for i in kept) >= max(evidence["kl"][i] for i in range(4) if i not in kept)
    a.save_pretrained(tmp_path)
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.linearize["plan_evidence"] == evidence
    # Scale up one unkept layer's attention output: its lone conversion now costs far more KL, so it is kept.
    loser = next(i for i in range(4) if i not in kept)
    with torch.no_grad():
        base.model.layers[loser].self_attn.o_proj.weight.mul_(20)
    c = convert(base, "lolcats", keep_attention="auto:2", rank_by="kl", calibration=ids, window=4)
    assert loser in c.config.linearize["keep_attention"]


def test_layer_kl_is_zero_for_an_exact_replacement():
    """A 'mixer' that is the attention itself changes nothing: KL 0 for every layer."""
    from linearize.convert.calibration import layer_kl

    base = tiny_base("llama", layers=3)
    ids = torch.randint(3, 128, (2, 20), generator=torch.Generator().manual_seed(5))

    class Same(torch.nn.Module):
        def __init__(self, attn):
            super().__init__()
            self.attn = attn

        def forward(self, hidden, position_embeddings=None):
            return self.attn.forward(hidden, position_embeddings=position_embeddings, attention_mask=None)  # no hooks

    assert layer_kl(base, ids, lambda attn, i: Same(attn)).abs().max() < 1e-6


def test_rank_by_errors():
    with pytest.raises(PlanError, match="--rank-by"):
        convert(tiny_base("llama"), "lolcats", keep_attention="auto:1", rank_by="bogus")


def test_retrieval_probes_ask_for_a_fact_stated_earlier():
    """Each probe states a fact once, asks for it at the end, and marks exactly the positions that predict the
    answer's tokens; the answer's value appears in the fact."""
    from linearize.convert.bases import load_tokenizer
    from linearize.convert.calibration import retrieval_probes

    tok = load_tokenizer("llama")
    ids, answer = retrieval_probes(tok, num_samples=3, seq_len=200, seed=1)
    assert ids.shape == answer.shape == (3, 200)
    for row, mask in zip(ids.tolist(), answer.tolist()):
        marked = [i for i, m in enumerate(mask) if m]
        assert marked == list(range(marked[0], marked[-1] + 1)) and marked[-1] == 198
        value = tok.decode(row[marked[0] + 1 :]).strip()
        assert value.isdigit() and len(value) == 5
        text = tok.decode(row[: marked[0] + 1])
        assert text.count(f" is {value}.") == 1 and text.rstrip().endswith("is")
    # With distractors: four facts about four things, the asked one's value the answer, the probe as long.
    ids, answer = retrieval_probes(tok, num_samples=3, seq_len=200, seed=1, distractors=3)
    assert ids.shape == answer.shape == (3, 200)
    for row, mask in zip(ids.tolist(), answer.tolist()):
        marked = [i for i, m in enumerate(mask) if m]
        value = tok.decode(row[marked[0] + 1 :]).strip()
        text = tok.decode(row[: marked[0] + 1])
        facts = re.findall(r"The code of the (\w+) is (\d{5})\.", text)
        asked = re.search(r"what is the code of the (\w+)\?", text).group(1)
        assert len(facts) == 4 and len({t for t, _ in facts}) == 4 and dict(facts)[asked] == value
    with pytest.raises(ValueError, match="distractors"):
        retrieval_probes(tok, distractors=8)


@pytest.mark.parametrize("rank_by", ["kl-recall", "kl-multikey", "kl-mix"])
def test_ranking_by_retrieval_probes_keeps_the_layers_they_cost_most(rank_by):
    """--rank-by kl-recall keeps the layers whose lone conversion moves the probes' answers most; kl-mix adds
    that to the prose KL, each as its share; both are recorded as the plan's evidence."""
    from linearize.convert.bases import load_tokenizer

    from helpers import tiny_smollm2

    tok = load_tokenizer("llama")
    base = tiny_smollm2(len(tok), layers=4)
    model = convert(base, "lolcats", keep_attention="auto:2", rank_by=rank_by, tokenizer=tok)
    ev = model.config.linearize["plan_evidence"]
    assert ev["ranked_by"] == rank_by and len(ev["kl_recall"]) == 4
    assert ("kl_prose" in ev) == (rank_by == "kl-mix")
    expected = sorted(sorted(range(4), key=lambda i: -ev["kl"][i])[:2])
    assert ev["kept_layers"] == expected == model.config.linearize["keep_attention"]
    if rank_by == "kl-mix":
        mix = [p / sum(ev["kl_prose"]) + r / sum(ev["kl_recall"]) for p, r in zip(ev["kl_prose"], ev["kl_recall"])]
        assert all(math.isclose(a, b, abs_tol=1e-3) for a, b in zip(mix, ev["kl"]))  # the record is rounded
