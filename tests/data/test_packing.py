"""One way from text to token windows: `linearize eval`, distillation and the main job's in-domain
measurement read the same documents (chat rows through the chat template), split them the same way
and pack them the same way (each document's ids, then the EOS id), so the same checkpoint, data,
sequence length and token budget give the same windows and the same perplexity."""

import copy
import json
import re

import pytest
import torch

from linearize.convert.bases import load_tokenizer
from linearize.distill.data import build_blocks
from linearize.evals.perplexity import heldout_ids
from linearize.evals.suite import evaluate
from linearize.pipeline import quality

from helpers import tiny_smollm2

SEQ, BUDGET = 32, 128


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("llama")  # the embedded SmolLM2 tokenizer (has an EOS and a chat template)


@pytest.fixture(scope="module")
def no_eos(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.eos_token = None
    assert tok.eos_token_id is None
    return tok


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_smollm2(len(tokenizer))


def chat_rows(path, n=40):
    """Instruction rows (distillation renders them with the chat template), each with its own number."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i}: " + "why " * 20},
                {"role": "assistant", "content": f"Answer {i}. " + "because " * 20},
            ]
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def plain_docs(path, n=40):
    """Plain documents whose text would run into the next one's if joined without a separator
    ("... the end" + "ing ..." tokenises as "ending")."""
    docs = [f"ing record {i}: " + " ".join(f"w{(i * 7 + j) % 31}" for j in range(30)) + " the end" for i in range(n)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def numbers(tokenizer, ids):
    """The numbers of the documents whose heading ("record N:") is whole in a window of ``ids``."""
    return {n for row in ids for n in re.findall(r"record (\d+):", tokenizer.decode(row))}


def test_packer_appends_the_eos_id_to_each_document_and_windows_cut_from_the_start(tokenizer, no_eos):
    from linearize.data.packing import pack, windows

    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    eos = tokenizer.eos_token_id
    assert pack(["a b", "the end"], tokenizer).tolist() == ids("a b") + [eos] + ids("the end") + [eos]
    # No EOS: each document is still tokenised on its own (no merge across the boundary), nothing between.
    assert pack(["the end", "ing"], no_eos).tolist() == ids("the end") + ids("ing") != ids("the ending")
    flat = torch.arange(10)
    assert windows(flat, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]  # the tail that fills no window is dropped
    assert windows(flat, 4, max_tokens=5).tolist() == [[0, 1, 2, 3]]  # whole windows, at least one
    assert windows(flat, 4, max_tokens=1).shape == (1, 4) and windows(flat, 11).shape == (0, 11)


@pytest.mark.parametrize("kind", ["chat", "no-eos"])
def test_eval_windows_are_the_main_jobs_and_distillations_heldout_windows(tmp_path, tokenizer, no_eos, kind):
    tok = tokenizer if kind == "chat" else no_eos
    data = chat_rows(tmp_path / "chat.jsonl") if kind == "chat" else plain_docs(tmp_path / "docs.jsonl")
    evaluated = heldout_ids(tok, data, seq_len=SEQ, max_tokens=BUDGET)  # what `linearize eval` measures
    _, held = build_blocks(data, tok, SEQ)  # what distillation holds out
    assert evaluated.shape[0] >= 2 and torch.equal(held[: evaluated.shape[0]], evaluated)
    if kind == "chat":  # the chat template's rendering, EOS id between documents
        text = tok.decode(evaluated.flatten())
        assert "<|im_start|>assistant" in text and tok.eos_token_id in evaluated


@pytest.mark.parametrize("kind", ["chat", "no-eos"])
def test_eval_suite_perplexity_equals_the_main_jobs_recorded_in_domain_perplexity(
    tmp_path, tokenizer, no_eos, model, kind
):
    tok = tokenizer if kind == "chat" else no_eos
    data = chat_rows(tmp_path / "chat.jsonl") if kind == "chat" else plain_docs(tmp_path / "docs.jsonl")
    recorded = quality(
        model,
        model,
        tok,
        SEQ,
        data=data,
        corpora=(),
        eval_tokens=BUDGET,
        passkey_lengths=(),
        mqar_pairs=(),
        log=lambda *a: None,
    )["in_domain"]
    evaluated = evaluate(model, tok, "tiny", suite=("ppl",), data=data, seq_len=SEQ, max_tokens=BUDGET)["quality"]
    assert evaluated["tokens"] == (BUDGET // SEQ) * (SEQ - 1)
    assert evaluated["perplexity"] == pytest.approx(recorded["student"], rel=1e-6, abs=1e-6)


def test_training_seed_orders_blocks_but_never_moves_the_heldout_split(tmp_path, tokenizer):
    data = plain_docs(tmp_path / "docs.jsonl")
    measured = numbers(tokenizer, heldout_ids(tokenizer, data, seq_len=16, max_tokens=10**6))
    assert measured
    for seed in (0, 3):  # `--seed 3` trains in another order, on the same training documents
        train, held = build_blocks(data, tokenizer, seq_len=16, seed=seed)
        assert not numbers(tokenizer, train) & measured  # nothing the main job or eval measures is trained on
        assert numbers(tokenizer, held) == measured
