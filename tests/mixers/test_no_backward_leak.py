"""Causality holds whatever follows a sequence: appending tokens after it, plainly or packed into the same row with
restarting ``position_ids`` (what ``DataCollatorWithFlattening`` and TRL's padding-free batches make), never changes
its logits, for every target, with and without a window, sinks and decay."""

import pytest
import torch

from linearize.convert.convert import convert
from linearize.convert.targets import MIXERS

from helpers import assert_close, perturb_new_parameters, tiny_base, tiny_settings

LINEAR = ("linear", "t2r", "hedgehog")  # the feature-map targets that take a window, sinks and decay
CASES = (
    [(t, "tiny") for t in MIXERS]
    + [(t, "window+sinks+decay") for t in LINEAR]
    + [
        ("lolcats", "default window"),
        ("lolcats", "window+sinks"),
        ("lolcats", "decay only"),
    ]
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
