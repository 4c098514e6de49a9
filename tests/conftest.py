"""Fixtures shared by every part's tests; the builders and checks they use are in helpers.py."""

import os

import pytest

from helpers import FAMILIES, HUB_BASES
from hub_configs import DEFAULT_FOR_FAMILY

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(params=[name for name in HUB_BASES if name not in DEFAULT_FOR_FAMILY.values()])
def other_hub_base(request):
    """The hub-shaped bases the ``family`` fixture does not stand for."""
    return request.param
