"""One source for the vocabulary size: after resize_token_embeddings the checkpoint saves, reloads (with
and without linearize) and generates with the new size."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from linearize.convert.convert import convert

from helpers import assert_close, outputs_without_linearize, perturb_new_parameters, tiny_base, tiny_settings

RESIZED = [("llama", "gla"), ("qwen2", "lolcats"), ("qwen3", "mamba")]
IDS = torch.tensor([[5, 139, 7, 9, 11, 13]])  # a new token id in the prompt


@pytest.fixture(scope="module")
def resized(tmp_path_factory):
    """Each case with its vocabulary grown to 140, saved, and loaded without linearize (all in one fresh interpreter):
    {case: (model, folder, logits there)}."""
    root = tmp_path_factory.mktemp("resized")
    models, folders = {}, []
    for family, target in RESIZED:
        base = tiny_base(family)
        model = perturb_new_parameters(convert(base, target, keep_attention="1", **tiny_settings(base, target)))
        model.resize_token_embeddings(140)
        folders.append(root / f"{family}-{target}")
        model.save_pretrained(folders[-1])
        models[family, target] = model
    outs = outputs_without_linearize(folders, IDS, root)
    return {key: (models[key], folder, out) for key, folder, out in zip(models, folders, outs)}


@pytest.mark.parametrize("family,target", RESIZED)
def test_resized_vocabulary_saves_reloads_and_generates(resized, family, target):
    model, ckpt, bare = resized[family, target]
    assert (
        model.get_input_embeddings().weight.shape[0] == model.lm_head.weight.shape[0] == model.config.vocab_size == 140
    )
    with torch.no_grad():
        expected = model(IDS).logits
    reloaded = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    assert reloaded.config.vocab_size == 140
    with torch.no_grad():
        assert_close(reloaded(IDS).logits, expected, 1e-5)
    gen = dict(attention_mask=torch.ones_like(IDS), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert torch.equal(reloaded.generate(IDS, **gen), model.generate(IDS, **gen))
    # Where linearize is absent (remote code): the same logits.
    assert_close(bare["logits"], expected, 1e-5)
