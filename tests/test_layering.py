"""The layering holds: imports run one way, face -> distill and evals -> convert -> data and kernels, and the
lower parts load without the upper ones (kernels without transformers' model code or the trainer)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Package -> (folder, rank). A module may import its own package and packages of lower rank only.
LAYERS = {"linearize": ("linearize", 3), "linearize.distill": ("distill", 2), "linearize.evals": ("evals", 2),
          "linearize.convert": ("convert", 1), "linearize.data": ("data", 0), "linearize.kernels": ("kernels", 0)}


def package_of(module):
    """The layer a dotted linearize module belongs to (the longest matching package)."""
    return max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)


def imports(path):
    """Every linearize module a file imports, at any depth (function-level imports count too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "linearize"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "linearize":
            found += [node.module if node.module != "linearize" else f"linearize.{a.name}" for a in node.names]
    return found


def violations():
    out = []
    for package, (folder, rank) in LAYERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            for module in imports(path):
                target = package_of(module)
                if target != package and LAYERS[target][1] >= rank:
                    out.append(f"{path.relative_to(ROOT)} ({package}) imports {module} ({target})")
    return out


def test_no_module_imports_a_layer_above_or_beside_it():
    assert violations() == []


def test_the_checker_sees_upward_imports(tmp_path, monkeypatch):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "bad.py").write_text("def f():\n    from linearize.convert.mixers import Mixer\n")
    for folder in ("linearize", "distill", "evals", "convert", "data"):
        (tmp_path / folder).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations() == ["kernels/bad.py (linearize.kernels) imports linearize.convert.mixers (linearize.convert)"]


LOADED = """
import importlib, pkgutil, sys
import linearize
assert set(sys.modules) & {"transformers", "torch"} == set(), "import linearize loaded " + str(
    sorted(set(sys.modules) & {"transformers", "torch"}))
package = importlib.import_module("{package}")  # (linearize.convert the attribute is the API function)
for m in pkgutil.walk_packages(package.__path__, "{package}."):
    importlib.import_module(m.name)
print("\\n".join(sorted(sys.modules)))
"""


@pytest.mark.parametrize("package,forbidden", [
    ("linearize.kernels", ("transformers", "linearize.convert", "linearize.data", "linearize.distill", "linearize.evals")),
    ("linearize.data", ("transformers.modeling_utils", "transformers.trainer", "linearize.convert", "linearize.distill",
                        "linearize.evals", "linearize.kernels")),
    ("linearize.convert", ("transformers.trainer", "deepspeed", "peft", "linearize.distill",
                           "linearize.evals")),
])
def test_lower_parts_load_without_the_upper_ones(package, forbidden):
    """Importing every module of a part (in a fresh interpreter) loads nothing from the parts above it:
    the kernels need neither transformers nor the trainer."""
    out = subprocess.run([sys.executable, "-c", LOADED.replace("{package}", package)], capture_output=True, text=True,
                         cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(out.stdout.split())
    assert not [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)]


def test_api_names_stay_functions_whatever_was_imported_first():
    """`convert` and `distill` name both API functions and subpackages; importing the subpackages first
    (as any use of the API does) must not turn `from linearize import convert` into a module."""
    script = ("import linearize.convert.bases, linearize.distill.trainer\n"
              "from linearize import TARGETS, convert, distill, load_base\n"
              "import linearize\n"
              "assert callable(convert) and callable(distill) and callable(load_base), (convert, distill)\n"
              "assert linearize.convert is convert and type(convert).__name__ == 'function'\n"
              "from linearize.convert.plan import parse_keep_attention\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
