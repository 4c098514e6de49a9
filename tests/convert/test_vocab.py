"""One source for the vocabulary size: after resize_token_embeddings the checkpoint saves, reloads (with
and without linearize) and generates with the new size."""

import subprocess
import sys

import pytest
import torch
from test_save_load import NO_LINEARIZE
from transformers import AutoModelForCausalLM

from linearize.convert.convert import convert

from helpers import assert_close, perturb_new_parameters, tiny_base, tiny_settings


@pytest.mark.parametrize("family,target", [("llama", "gla"), ("qwen2", "lolcats"), ("qwen3", "mamba")])
def test_resized_vocabulary_saves_reloads_and_generates(tmp_path, family, target):
    base = tiny_base(family)
    model = perturb_new_parameters(convert(base, target, keep_attention="1", **tiny_settings(base, target)))
    model.resize_token_embeddings(140)
    assert (
        model.get_input_embeddings().weight.shape[0] == model.lm_head.weight.shape[0] == model.config.vocab_size == 140
    )
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    ids = torch.tensor([[5, 139, 7, 9, 11, 13]])  # a new token id in the prompt
    with torch.no_grad():
        expected = model(ids).logits
    reloaded = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    assert reloaded.config.vocab_size == 140
    with torch.no_grad():
        assert_close(reloaded(ids).logits, expected, 1e-5)
    gen = dict(attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert torch.equal(reloaded.generate(ids, **gen), model.generate(ids, **gen))
    # Where linearize is absent (remote code): the same logits.
    torch.save({"ids": ids}, tmp_path / "ref.pt")
    (tmp_path / "load.py").write_text(NO_LINEARIZE)
    subprocess.run(
        [
            sys.executable,
            "-I",
            str(tmp_path / "load.py"),
            str(ckpt),
            str(tmp_path / "ref.pt"),
            str(tmp_path / "out.pt"),
        ],
        check=True,
        cwd=tmp_path,
    )
    assert_close(torch.load(tmp_path / "out.pt")["logits"], expected, 1e-5)
