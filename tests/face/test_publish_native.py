"""Publishing natively: the main job's --export native and `linearize push --native` deliver the folder
`linearize export` writes (an architecture transformers ships, loading without remote code)."""

import json
import os
import subprocess

from linearize.cli import main
from linearize.convert.bases import load_tokenizer
from linearize.convert.convert import convert

from fake_hub import FakeHub
from helpers import LINEARIZE, tiny_smollm2, tiny_smollm2_dir

TOKEN = "hf_fakeTOKEN1234567890abcdef"


def tiny_base_dir(tmp_path):
    return tiny_smollm2_dir(tmp_path / "tiny")


def test_main_job_exports_natively_and_refuses_before_training(tmp_path, capsys):
    base_dir = tiny_base_dir(tmp_path)
    small = [
        "--tokens",
        "512",
        "--seq-len",
        "64",
        "--batch-size",
        "2",
        "--eval-data",
        "none",
        "--passkey-lengths",
        "",
        "--mqar-pairs",
        "",
        "--eval-tokens",
        "128",
    ]
    # lolcats has no host architecture: refused in one line before any training, nothing written.
    code = main(
        ["--base", str(base_dir), "--to", "lolcats", "--out", str(tmp_path / "no"), "--export", "native", *small]
    )
    err = capsys.readouterr().err
    assert code == 2 and "linearize: error: cannot export target 'lolcats'" in err
    assert "[2/5] transfer" not in err and not (tmp_path / "no").exists() and not (tmp_path / "no-native").exists()
    out = tmp_path / "out"
    code = main(
        [
            "--base",
            str(base_dir),
            "--to",
            "mamba",
            "--keep-attention",
            "1",
            "--out",
            str(out),
            "--export",
            "native",
            *small,
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    native = tmp_path / "out-native"
    assert f"exported natively to {native}" in captured.out
    assert json.loads((native / "config.json").read_text())["model_type"] == "granitemoehybrid"
    assert (out / "config.json").exists()  # the linearize checkpoint is kept beside it


def test_push_native_uploads_the_exported_folder(tmp_path):
    tok = load_tokenizer("llama")
    base = tiny_smollm2(len(tok))
    ckpt = tmp_path / "tiny-mamba"
    convert(base, "mamba", keep_attention="1", base_name="llama").save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    with FakeHub() as hub:
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_DISABLE_TELEMETRY="1")
        proc = subprocess.run(
            [LINEARIZE, "push", str(ckpt), "--repo-id", "me/tiny-native", "--native"],
            env=env,
            capture_output=True,
            text=True,
        )
        refused = subprocess.run(
            [LINEARIZE, "push", str(tmp_path / "none"), "--repo-id", "me/x", "--native"],
            env=env,
            capture_output=True,
            text=True,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    arrived = {path: data for (repo, rev, path), data in hub.files.items() if repo == "me/tiny-native"}
    assert json.loads(arrived["config.json"])["model_type"] == "granitemoehybrid"
    assert "model.safetensors" in arrived and not [p for p in arrived if p.endswith(".py")]  # no remote code
    assert "GraniteMoeHybrid" in arrived["README.md"].decode()
    assert not (ckpt / "README.md").exists()  # the source folder is left as it was
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0
