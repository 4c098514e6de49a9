"""A prefill's number of dispatched ops must not grow with its length (issue #23): on a GPU each op is a kernel
launch, and a Python loop over blocks of tokens made the converted model ~10x slower than its teacher there."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from linearize.api import TARGETS, convert

from helpers import tiny_base, tiny_settings

# Targets whose CPU chunked form still loops over chunks (fla's kernels serve them on CUDA): the gated delta rule's
# chunk-to-chunk recurrence is not a sum, and GLA's per-key-dimension in-chunk decays would be a [T, C, K] tensor.
LOOPING = {"gla", "gdn"}


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def prefill_ops(model, length):
    ids = torch.randint(3, 100, (1, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), CountOps() as ops:
        model(ids)
    return ops.count


def one_layer(target, **settings):
    base = tiny_base("llama", layers=1)
    base.config.max_position_embeddings = 4096  # positions only: no weight depends on it
    return convert(base, target, **(settings or tiny_settings(base, target))).eval()


@pytest.mark.parametrize("target", [t for t in TARGETS if t not in LOOPING])
def test_prefill_ops_do_not_grow_with_length(target):
    model = one_layer(target)
    short, long = prefill_ops(model, 1024), prefill_ops(model, 4096)
    assert long <= 1.2 * short, f"{target}: a 4096-token prefill dispatches {long} ops, 1024 tokens {short}"


def test_default_layer_prefill_ops_do_not_grow_with_length():
    """The main job's layer: LoLCATs with a 64-token window, 4 sinks and a decay (main dispatched 3.75x)."""
    model = one_layer("lolcats", window=64, sinks=4, decay=64)
    short, long = prefill_ops(model, 1024), prefill_ops(model, 4096)
    assert long <= 1.2 * short, f"a 4096-token prefill dispatches {long} ops, 1024 tokens {short}"
