import torch


def assert_close(actual, expected, tol):
    diff = (actual.float() - expected.float()).abs().max().item()
    assert diff <= tol, f"max abs diff {diff:.3g} > {tol}"
