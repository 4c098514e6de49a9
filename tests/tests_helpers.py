import torch


def assert_close(actual, expected, tol):
    diff = (actual.float() - expected.float()).abs().max().item()
    assert diff <= tol, f"max abs diff {diff:.3g} > {tol}"


# The console script installed beside this interpreter: what a user types, found without relying on
# PATH (the README runs the tests as `.venv/bin/python -m pytest`, with no virtualenv activated).
import sys as _sys
from pathlib import Path as _Path

LINEARIZE = str(_Path(_sys.executable).with_name("linearize"))
