"""The layout works from the project's own folder: no top-level name of ours shadows a package that a dependency
imports (transformers >= 5.25 imports HF's `kernels`, beside which sits our kernels/), so the README's commands run
word for word there with the newest releases."""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def from_the_project_folder(*args):
    """Run ``python *args`` with the project's folder as cwd, which `-m` and `-c` put first on sys.path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=dict(env, HF_HUB_OFFLINE="1"), capture_output=True, text=True
    )


def top_level_names():
    """What `import NAME` could find in the project's folder: regular packages and modules."""
    return {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()} | {
        p.stem for p in ROOT.glob("*.py")
    }


@pytest.fixture(scope="module")
def hf_kernels():
    """HF's `kernels` must be installed (it is in the test extra), or the shadowing could not show."""
    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("HF's `kernels` package is not installed: pip install -e '.[test]'")


def test_only_linearize_is_a_top_level_package_and_no_name_is_a_dependencys():
    assert {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()} == {"linearize"}
    taken = set(importlib.metadata.packages_distributions())
    assert sorted(top_level_names() & taken - {"linearize"}) == []


def test_transformers_models_and_our_kernels_import_from_the_project_folder(hf_kernels):
    script = (
        "import kernels, os\n"
        f"assert kernels.__file__ and not kernels.__file__.startswith({str(ROOT / 'kernels')!r}), kernels\n"
        "from kernels import CUDAProperties, get_kernel\n"
        "from transformers.models.llama.modeling_llama import LlamaForCausalLM\n"
        "import linearize.kernels, linearize.kernels.linear_attn.chunk, linearize.convert.bases\n"
        f"assert os.path.realpath(linearize.kernels.linear_attn.chunk.__file__).startswith({str(ROOT)!r})\n"
        "print('ok')\n"
    )
    out = from_the_project_folder("-c", script)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_the_cli_runs_from_the_project_folder(hf_kernels):
    out = from_the_project_folder("-m", "linearize.cli", "--help")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("usage: linearize"), out.stdout[:300]


def test_pytest_runs_from_the_project_folder(hf_kernels):
    out = from_the_project_folder("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/data/test_packing.py")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
