"""Every cookbook recipe runs its tiny CPU version (--smoke), which asserts its own result.

The recipes run one after another in a single child process (as `python <recipe> --smoke` would run each,
with `__main__` as its name): importing torch, transformers and DeepSpeed once instead of six times saves
about a minute of CI."""

import json
import os
import subprocess
import sys

import pytest

COOKBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "cookbook")
RECIPES = sorted(f for f in os.listdir(COOKBOOK) if f.endswith(".py") and f != "smoke.py")

# Runs each recipe as a script would run, records whether it printed "smoke ok" or the error it raised.
DRIVER = """
import contextlib, io, json, runpy, sys, traceback
results = {}
for recipe in sys.argv[1:]:
    sys.argv = [recipe, "--smoke"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(recipe, run_name="__main__")
        results[recipe] = {"ok": "smoke ok" in out.getvalue(), "tail": out.getvalue()[-2000:]}
    except BaseException:
        results[recipe] = {"ok": False, "tail": out.getvalue()[-1000:] + traceback.format_exc()[-3000:]}
print("RESULTS " + json.dumps(results))
"""


def test_every_method_has_a_recipe():
    assert RECIPES == [
        "gated_deltanet.py",
        "liger_gla.py",
        "lolcats.py",
        "long_context.py",
        "mamba_in_llama.py",
        "recurformer.py",
        "supra.py",
    ]


@pytest.fixture(scope="module")
def smoke_runs():
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, *RECIPES],
        cwd=COOKBOOK,
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULTS ") :])


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_smoke(smoke_runs, recipe):
    assert smoke_runs[recipe]["ok"], smoke_runs[recipe]["tail"]
