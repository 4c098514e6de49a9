"""Fixtures shared by every part's tests; the builders and checks they use are in helpers.py."""

import os

# Before anything imports huggingface_hub, which reads this once at import (set later, an unknown id paid 23 s of
# HTTP retries before failing).
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub

import pytest  # noqa: E402

from helpers import FAMILIES, HUB_BASES  # noqa: E402
from hub_configs import DEFAULT_FOR_FAMILY  # noqa: E402


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(params=[name for name in HUB_BASES if name not in DEFAULT_FOR_FAMILY.values()])
def other_hub_base(request):
    """The hub-shaped bases the ``family`` fixture does not stand for."""
    return request.param
