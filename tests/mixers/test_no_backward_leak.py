"""Causality holds whatever follows a sequence: appending tokens after it, plainly or packed into the same row with
restarting ``position_ids`` (what ``DataCollatorWithFlattening`` and TRL's padding-free batches make), never changes
its logits, for every target, with and without a window, sinks and decay."""

import pytest
import torch

from linearize.convert.convert import convert
from linearize.convert.targets import MIXERS

from helpers import WINDOWED, assert_close, perturb_new_parameters, tiny_base, tiny_settings

LINEAR = ("linear", "t2r", "hedgehog")  # the feature-map targets that take a window, sinks and decay
# WINDOWED: the recurrences that take a window and sinks mixed Liger's way
CASES = (
    [(t, "tiny") for t in MIXERS]
    + [(t, "window+sinks+decay") for t in LINEAR]
    + [
        ("lolcats", "default window"),
        ("lolcats", "window+sinks"),
        ("lolcats", "decay only"),
    ]
    + [(t, "window+sinks") for t in WINDOWED]
)
SETTINGS = {
    "window+sinks+decay": {"window": 4, "sinks": 2, "decay": 16},
    "default window": {},
    "window+sinks": {"window": 4, "sinks": 3},
    "decay only": {"window": 0, "decay": 16},
}


@pytest.mark.parametrize("target,setting", CASES)
@pytest.mark.parametrize("keep", [None, "1"])
def test_appending_never_changes_the_earlier_sequence(target, setting, keep):
    base = tiny_base("llama")
    settings = tiny_settings(base, target) if setting == "tiny" else SETTINGS[setting]
    model = perturb_new_parameters(convert(base, target, keep_attention=keep, **settings))
    g = torch.Generator().manual_seed(0)
    first, second = torch.randint(3, 128, (1, 10), generator=g), torch.randint(3, 128, (1, 7), generator=g)
    both = torch.cat([first, second], 1)
    with torch.no_grad():
        alone = model(first).logits
        plain = model(both).logits[:, :10]
        packed = model(both, position_ids=torch.cat([torch.arange(10), torch.arange(7)])[None]).logits[:, :10]
    assert_close(plain, alone, 1e-5)
    assert_close(packed, alone, 1e-5)


@pytest.mark.parametrize("target,setting", CASES)
def test_packed_sequences_are_separate_sequences(target, setting):
    """Rows packed with restarting positions give each sequence the logits and the gradients it has alone: its own
    window, sinks, convolution and state, in the softmax layer (transformers' packed mask) and in the mixers."""
    base = tiny_base("llama")
    settings = tiny_settings(base, target) if setting == "tiny" else SETTINGS[setting]
    model = perturb_new_parameters(convert(base, target, keep_attention="1", **settings)).train()
    params = [p for p in model.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(0)
    lengths = (9, 6, 12)  # two rows: 9 + 6 and 12 + padding-free 3 more of a fourth sequence
    seqs = [torch.randint(3, 128, (1, n), generator=g) for n in (*lengths, 3)]

    def loss_and_grads(logits_list):
        loss = sum((lg.float() ** 2).mean() for lg in logits_list)
        return loss, torch.autograd.grad(loss, params, allow_unused=True)

    alone = [model(s, use_cache=False).logits for s in seqs]
    rows = torch.cat([torch.cat(seqs[:2], 1), torch.cat(seqs[2:], 1)])
    positions = torch.cat(
        [torch.cat([torch.arange(9), torch.arange(6)]), torch.cat([torch.arange(12), torch.arange(3)])]
    ).view(2, 15)
    packed = model(rows, position_ids=positions).logits
    split = [packed[:1, :9], packed[:1, 9:], packed[1:, :12], packed[1:, 12:]]
    for got, want in zip(split, alone):
        assert_close(got, want, 1e-5)
    _, want_grads = loss_and_grads(alone)
    _, got_grads = loss_and_grads(split)
    for got, want in zip(got_grads, want_grads):
        if want is None:
            assert got is None or not got.any()
        else:
            assert_close(got, want, 1e-4)
