"""The package list, derived: each top-level folder is a subpackage of `linearize`, with every package
below it (a hand-written list once left `linearize.kernels.delta_rule` out of the wheel)."""

from setuptools import find_packages, setup

ROOTS = {"linearize": "linearize", "linearize.kernels": "kernels", "linearize.data": "data", "linearize.convert": "convert",
         "linearize.distill": "distill", "linearize.evals": "evals"}
packages = [name for root, folder in ROOTS.items() for name in [root] + [f"{root}.{p}" for p in find_packages(folder)]]
setup(packages=packages, package_dir=ROOTS)
