"""The package list, derived: each top-level folder is a subpackage of `linearize`, with every package
below it (a hand-written list once left `linearize.kernels.delta_rule` out of the wheel).

The part folders (kernels/, data/, convert/, distill/, evals/) have no __init__.py: with one, a top-level folder is a
regular package that shadows any dependency's package of that name whenever the project's folder is on sys.path
(`python -m pytest`, `python -m linearize.cli`, torchrun), and transformers >= 5.25 imports HF's `kernels`. Without
one it is at most a namespace portion, which a regular package anywhere on sys.path beats. So the roots are named
here (find_packages lists only folders with an __init__.py) and find_packages lists the packages below them. The
wheel holds the parts as namespace subpackages of linearize; in a source tree (editable install, or run from the
project's folder) linearize/__init__.py maps them in, which setuptools' editable finder cannot (tests/test_layout.py).
"""

from setuptools import find_packages, setup

ROOTS = {
    "linearize": "linearize",
    "linearize.kernels": "kernels",
    "linearize.data": "data",
    "linearize.convert": "convert",
    "linearize.distill": "distill",
    "linearize.evals": "evals",
}
packages = [name for root, folder in ROOTS.items() for name in [root] + [f"{root}.{p}" for p in find_packages(folder)]]
setup(packages=packages, package_dir=ROOTS)
