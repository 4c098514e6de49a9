"""The layering holds: imports run one way, face -> distill and evals -> convert -> data and kernels, and the
lower parts load without the upper ones (kernels without transformers' model code or the trainer)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Package -> (folder, rank). A module may import its own package and packages of lower rank only.
LAYERS = {
    "linearize": ("linearize", 3),
    "linearize.distill": ("distill", 2),
    "linearize.evals": ("evals", 2),
    "linearize.convert": ("convert", 1),
    "linearize.data": ("data", 0),
    "linearize.kernels": ("kernels", 0),
    "linearize.errors": ("linearize/errors.py", -1),
}  # the error base: imports nothing, every part raises it


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
        files = (
            [p for p in [ROOT / folder] if p.is_file()]
            if folder.endswith(".py")
            else sorted((ROOT / folder).rglob("*.py"))
        )
        for path in files:
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
package = importlib.import_module("{package}")
for m in pkgutil.walk_packages(package.__path__, "{package}."):
    importlib.import_module(m.name)
print("\\n".join(sorted(sys.modules)))
"""


@pytest.mark.parametrize(
    "package,forbidden",
    [
        (
            "linearize.kernels",
            ("transformers", "linearize.convert", "linearize.data", "linearize.distill", "linearize.evals"),
        ),
        (
            "linearize.data",
            (
                "transformers.modeling_utils",
                "transformers.trainer",
                "linearize.convert",
                "linearize.distill",
                "linearize.evals",
                "linearize.kernels",
            ),
        ),
        ("linearize.convert", ("transformers.trainer", "deepspeed", "peft", "linearize.distill", "linearize.evals")),
    ],
)
def test_lower_parts_load_without_the_upper_ones(package, forbidden):
    """Importing every module of a part (in a fresh interpreter) loads nothing from the parts above it:
    the kernels need neither transformers nor the trainer."""
    out = subprocess.run(
        [sys.executable, "-c", LOADED.replace("{package}", package)], capture_output=True, text=True, cwd="/"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(out.stdout.split())
    assert not [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)]


def test_parts_are_packages_and_the_api_functions_have_their_own_names():
    """`linearize.convert` is the subpackage whatever was imported first (`import linearize.convert.lolcats as m`
    works); the API's functions are `convert_model` and `distill_model`."""
    script = (
        "from linearize import TARGETS, convert_model, distill_model, load_base\n"
        "import linearize.convert.plan as plan, linearize.distill.recipe as recipe\n"
        "import linearize\n"
        "assert callable(convert_model) and callable(distill_model) and callable(load_base)\n"
        "assert type(linearize.convert).__name__ == 'module' and plan.parse_keep_attention\n"
        "assert convert_model is __import__('linearize.api').api.convert\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]


LOAD_NATIVELY = """
from transformers import AutoConfig, AutoModelForCausalLM
assert type(AutoConfig.from_pretrained(sys.argv[1])).__name__ == "LinearizedConfig"
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])  # no trust_remote_code
assert type(model).__module__ == "linearize.convert.modeling_linearized", type(model).__module__
"""
LIGHT = """
assert not set(sys.modules) & {"transformers", "torch"}, "import linearize loaded " + str(
    sorted(set(sys.modules) & {"transformers", "torch"}))
"""
FIRST = {
    "linearize first": "import sys\nimport linearize\n" + LIGHT,
    "transformers first": "import sys\nimport transformers.models.auto.modeling_auto\nimport linearize\n",
    # our own module imports transformers' Auto classes while it is itself mid-import
    "our config module first": "import sys\nimport linearize.convert.configuration_linearized\n",
    "a method module first": "import sys\nimport linearize.convert.lolcats\n",
}


@pytest.mark.parametrize("order", FIRST)
def test_import_linearize_is_enough_to_load_a_checkpoint_without_remote_code(tmp_path, order):
    """As `import fla` registers fla's models: after a bare `import linearize` (which itself loads neither torch nor
    transformers), plain `from_pretrained(folder)` loads a converted checkpoint as linearize's own class, whether
    transformers loads its Auto classes after linearize, already had, or loads them for one of linearize's modules."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from linearize.api import convert

    base = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    convert(base, "lolcats", keep_attention="0").save_pretrained(tmp_path / "ckpt")
    out = subprocess.run(
        [sys.executable, "-c", FIRST[order] + LOAD_NATIVELY, str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr[-2000:]
