"""What users install: a wheel built from the tree, installed without -e, must import, convert a tiny
model to every target, and its checkpoints must load where linearize is absent."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys, torch
    import linearize
    assert linearize.__file__.startswith(sys.argv[1]), linearize.__file__  # the wheel's copy, not the tree
    from transformers import LlamaConfig, LlamaForCausalLM
    from linearize import TARGETS, convert_model as convert
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()
    ids = torch.randint(3, 64, (1, 12))
    for target in TARGETS:
        settings = {"recency_fraction": 0.5, "calibration": torch.randint(3, 64, (2, 16)),
                    "recency_window": 4} if target == "recurformer" else {}
        model = convert(base, target, keep_attention="0" if target != "recurformer" else None, **settings)
        model.save_pretrained(f"{sys.argv[2]}/{target}")
        torch.save({"ids": ids, "logits": model(ids).logits}, f"{sys.argv[2]}/{target}/logits.pt")
    print("converted", len(TARGETS))
""")

LOAD = textwrap.dedent("""
    import os, sys, torch
    sys.modules["linearize"] = None  # linearize is absent: remote code only
    from transformers import AutoModelForCausalLM
    for target in sorted(os.listdir(sys.argv[1])):
        folder = os.path.join(sys.argv[1], target)
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        saved = torch.load(os.path.join(folder, "logits.pt"))
        got = model(saved["ids"]).logits
        assert (got - saved["logits"]).abs().max() < 1e-4, target
    print("loaded", len(os.listdir(sys.argv[1])))
""")


def test_wheel_installs_converts_every_target_and_loads_without_linearize(tmp_path):
    wheels, site, out = tmp_path / "wheels", tmp_path / "site", tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(wheels.glob("linearize-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        cwd=tmp_path,
    )
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1")
    # Run away from the source tree so only the installed wheel can be imported as linearize.
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(site), str(out)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded 9" in proc.stdout
