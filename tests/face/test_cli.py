"""The CLI: bad input gives one clear line, exit code 2 and nothing written; the real embedded model converts."""

import os
import subprocess

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from linearize.cli import main

from helpers import LINEARIZE, tiny_base


@pytest.fixture
def tiny_dir(tmp_path):
    path = tmp_path / "tiny-llama"
    tiny_base("llama").save_pretrained(path)
    return path


def run_main(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("linearize: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_converts_a_local_directory(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run_main(
        ["convert", "--base", str(tiny_dir), "--to", "hedgehog", "--out", str(out), "--keep-attention", "every:2"],
        capsys,
    )
    assert code == 0
    assert "converted 2/3 layers to hedgehog" in stdout and "KV cache" in stdout
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.mixers[1] is None and model.config.mixers[0]["target"] == "hedgehog"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]  # temp folder renamed away


@pytest.mark.parametrize(
    "args,message",
    [
        (["--base", "no-such-org/no-such-model", "--to", "linear"], "unknown base 'no-such-org/no-such-model'"),
        (["--base", "./missing-dir", "--to", "linear"], "no such directory"),
        (["--base", "TINY", "--to", "performer"], "unknown target 'performer': choose one of linear, t2r"),
        (
            ["--base", "TINY", "--to", "linear", "--keep-attention", "7"],
            "layer 7 is out of range for a model with 3 layers",
        ),
        (
            ["--base", "GPT2", "--to", "linear"],
            "unsupported model family 'gpt2': linearize converts llama, mistral, qwen2, qwen3",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tiny_dir, tmp_path, capsys, args, message):
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)).save_pretrained(gpt2)
    args = [{"TINY": str(tiny_dir), "GPT2": str(gpt2)}.get(a, a) for a in args]
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_main(["convert", *args, "--out", str(out)], capsys)
    assert code == 2
    assert message in error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_non_empty_out_needs_overwrite(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_main(["convert", "--base", str(tiny_dir), "--to", "linear", "--out", str(out)], capsys)
    assert code == 2 and "pass --overwrite" in error_line(err)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    code, _, _ = run_main(
        ["convert", "--base", str(tiny_dir), "--to", "linear", "--out", str(out), "--overwrite"], capsys
    )
    assert code == 0 and (out / "model.safetensors").exists() and not (out / "keep.txt").exists()


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run(
        [LINEARIZE, "convert", "--base", "llama", "--to", "nope", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "unknown target 'nope'" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_embedded_smollm2_converts_offline(tmp_path):
    """`linearize convert --base llama --to lolcats` on the real embedded SmolLM2-135M-Instruct."""
    out = tmp_path / "smol-lolcats"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [LINEARIZE, "convert", "--base", "llama", "--to", "lolcats", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "converted 30/30 layers to lolcats" in proc.stdout
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.num_hidden_layers == 30 and model.config.num_key_value_heads == 3
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out_ids = model.generate(**ids, max_new_tokens=5, do_sample=False)
        full = model(out_ids).logits
    assert out_ids.shape[1] == ids["input_ids"].shape[1] + 5 and torch.isfinite(full).all()


def test_flags_are_generated_from_the_settings_schemas(capsys):
    """Every scalar field of ConvertSettings and TrainConfig is a flag, with its help text (one place for both)."""
    import dataclasses

    from linearize.cli import build_parser
    from linearize.convert.settings import ConvertSettings
    from linearize.distill.config import TrainConfig

    actions = {
        a.dest: a
        for verb in ("convert", "distill")
        for a in build_parser()._subparsers._group_actions[0].choices[verb]._actions
    }
    for schema in (ConvertSettings, TrainConfig):
        for f in dataclasses.fields(schema):
            if f.name == "lora_targets":  # a tuple: not a flag
                continue
            assert f.name in actions, f.name
            assert actions[f.name].help.startswith(f.metadata["help"].replace("%", "%%")[:18]), f.name
            assert actions[f.name].default is None  # unset flags leave the schema's or the recipe's default


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--min-lr-ratio", "2", "bad --min-lr-ratio 2.0: a fraction of --lr"),
        ("--warmup-steps", "-1", "bad --warmup-steps -1"),
    ],
)
def test_a_generated_training_flag_reaches_the_config(tiny_dir, tmp_path, capsys, flag, value, message):
    """Flags new to the CLI (they came with the schema) reach TrainConfig's validation: one line, exit 2, before any
    model loads."""
    code, _, err = run_main(
        ["distill", str(tiny_dir), "--stage", "kd", flag, value, "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and message in error_line(err)
    assert not (tmp_path / "o").exists()
