"""Publishing: verification, the model card, and `linearize push` against a local fake of the Hub API."""

import os
import subprocess
import sys

import pytest
import yaml

from linearize.card import model_card
from linearize.cli import main
from linearize.convert.bases import load_tokenizer
from linearize.convert.convert import convert
from linearize.hub import VerificationError, verify

from fake_hub import FakeHub
from helpers import LINEARIZE, tiny_smollm2

TOKEN = "hf_fakeTOKEN1234567890abcdef"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tok = load_tokenizer("llama")
    base = tiny_smollm2(len(tok))
    path = tmp_path_factory.mktemp("hub") / "tiny-lolcats"
    model = convert(base, "lolcats", keep_attention="1", window=4, base_name="llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_push_sends_every_file_with_card_and_no_token(ckpt, tmp_path):
    (ckpt / "training" / "kd" / "checkpoints" / "step-2").mkdir(parents=True)
    (ckpt / "training" / "kd" / "checkpoints" / "step-2" / "optimizer.bin").write_bytes(b"pickle")  # stays local
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    with FakeHub() as hub:
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_DISABLE_TELEMETRY="1")
        proc = subprocess.run(
            [LINEARIZE, "push", str(ckpt), "--repo-id", "me/tiny-lolcats", "--private", "--revision", "v1"],
            env=env,
            capture_output=True,
            text=True,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    created = hub.repos["me/tiny-lolcats"]
    assert (created.get("private") is True or created.get("visibility") == "private") and (
        "me/tiny-lolcats",
        "v1",
    ) in hub.branches
    arrived = {path: data for (repo, rev, path), data in hub.files.items() if repo == "me/tiny-lolcats"}
    local = {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file() and "checkpoints" not in p.parts}
    assert set(arrived) == local
    for name, data in arrived.items():
        assert data == (ckpt / name).read_bytes(), name
        assert TOKEN.encode() not in data, name
    assert TOKEN not in proc.stdout + proc.stderr
    assert any(
        h.get("authorization") == f"Bearer {TOKEN}" or h.get("Authorization") == f"Bearer {TOKEN}"
        for _, _, h in hub.requests
    )  # the token went to the Hub, and only there
    card = arrived["README.md"].decode()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["library_name"] == "transformers"
    assert meta["license"] == "apache-2.0" and "lolcats" in meta["tags"]


def test_dry_run_verifies_and_lists_without_uploading(ckpt, capsys):
    assert main(["push", str(ckpt), "--repo-id", "me/x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "model.safetensors" in out and "modeling_linearized.py" in out


def test_a_folder_that_fails_is_not_pushed(ckpt, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ckpt.iterdir():
        if f.is_file():
            (bad / f.name).write_bytes(f.read_bytes())
    (bad / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(VerificationError, match="pickled files"):
        verify(bad)
    (bad / "pytorch_model.bin").unlink()
    (bad / "modeling_linearized.py").write_text("raise ImportError('broken modeling code')\n")
    with FakeHub() as hub:
        code = main(["push", str(bad), "--repo-id", "me/bad"])
    assert code == 2 and "does not load and generate without linearize" in capsys.readouterr().err
    assert not hub.requests


def test_card_tables_render_and_its_snippet_runs(ckpt, tmp_path):
    card = str(model_card(ckpt, str(ckpt)))
    assert "| this model's decode state" in card and "converted layers: [0]" in card and "Zhang et al." in card
    snippet = card.split("```python")[1].split("```")[0]
    env = {k: v for k, v in os.environ.items()}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; sys.modules['linearize'] = None\n" + snippet],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()
