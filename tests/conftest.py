"""Fixtures shared by every part's tests; the builders and checks they use are in helpers.py."""

import os

# Before anything imports huggingface_hub, which reads this once at import (set later, an unknown id paid 23 s of
# HTTP retries before failing).
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub
# Under pytest-xdist (CI's `-n 2`) each worker, and the processes its tests start, computes on one thread: two workers
# each spinning torch's two threads on two cores ran the suite slower than one process; on one thread each, 700 s
# against 1292 s in one process. Set before torch is imported (helpers imports it), which reads it once.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import FAMILIES, HUB_BASES  # noqa: E402
from hub_configs import DEFAULT_FOR_FAMILY  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # in case a plugin imported torch before this file


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(params=[name for name in HUB_BASES if name not in DEFAULT_FOR_FAMILY.values()])
def other_hub_base(request):
    """The hub-shaped bases the ``family`` fixture does not stand for."""
    return request.param
