"""Every cookbook recipe runs its tiny CPU version (--smoke), which asserts its own result."""

import os
import subprocess
import sys

import pytest

COOKBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "cookbook")
RECIPES = sorted(f for f in os.listdir(COOKBOOK) if f.endswith(".py") and f != "smoke.py")


def test_every_method_has_a_recipe():
    assert RECIPES == [
        "liger_gla.py",
        "lolcats.py",
        "long_context.py",
        "mamba_in_llama.py",
        "recurformer.py",
        "supra.py",
    ]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_smoke(recipe):
    proc = subprocess.run(
        [sys.executable, recipe, "--smoke"],
        cwd=COOKBOOK,
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "smoke ok" in proc.stdout
