"""Distillation: data, both stages lower their loss, what each trains, merged LoRA, exact resume."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from linearize.convert.convert import convert
from linearize.data.packing import pack, windows
from linearize.data.texts import DataError, documents
from linearize.distill.checkpoints import latest_checkpoint
from linearize.distill.config import TrainConfig
from linearize.distill.data import build_blocks
from linearize.distill.trainer import train

from helpers import perturb_new_parameters, tiny_base, tiny_smollm2_dir

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, where helpers.py is


def random_blocks(n=128, seq_len=32, seed=0):
    return torch.randint(3, 128, (n, seq_len), generator=torch.Generator().manual_seed(seed))


def small_cfg(stage, **kw):
    base = dict(stage=stage, tokens=40 * 2 * 32, seq_len=32, batch_size=2, lr=5e-2 if stage == "transfer" else 3e-3)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("target", ["lolcats", "mamba", "gdn"])
def test_transfer_lowers_loss_and_trains_only_new_parameters(tmp_path, target):
    teacher = tiny_base("llama")
    student = convert(teacher, target, **({"window": 4} if target == "lolcats" else {}))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    new = {f"model.layers.{i}.self_attn.{n}" for i, m in student.mixers().items() for n in m.new_parameter_names()}
    trained, summary, history = train(
        student, teacher, random_blocks(), small_cfg("transfer"), tmp_path, progress=False
    )
    first = sum(h["loss"] for h in history[:3]) / 3
    last = sum(h["loss"] for h in history[-3:]) / 3
    assert last < 0.8 * first, (first, last)
    assert set(history[0]["layers"]) == {"0", "1", "2"}
    after = trained.state_dict()
    for name, tensor in before.items():
        if name in new:
            continue
        assert torch.equal(after[name], tensor), name  # bit-identical
    assert any(not torch.equal(after[n], before[n]) for n in new)
    assert (tmp_path / "loss_curve_transfer.png").exists() and list(tmp_path.rglob("events.out.tfevents*"))


def test_kd_with_lora_lowers_loss_and_saves_a_merged_model(tmp_path):
    teacher = tiny_base("qwen3")
    student = perturb_new_parameters(convert(teacher, "hedgehog"), scale=2.0)  # far enough from the teacher
    blocks = random_blocks(4).repeat(32, 1)  # a few sequences seen repeatedly: the loss must fall on them
    trained, summary, history = train(
        student, teacher, blocks, small_cfg("kd", tokens=24 * 2 * 32, lr=1e-2), tmp_path, progress=False
    )
    first, last = history[0]["loss"], sum(h["loss"] for h in history[-3:]) / 3
    assert last < 0.6 * first, (first, last)
    assert type(trained).__name__ == "LinearizedForCausalLM"
    assert not [n for n in trained.state_dict() if "lora" in n]
    out = tmp_path / "ckpt"
    trained.save_pretrained(out)
    ids = random_blocks(2, 16, seed=5)
    with torch.no_grad():
        torch.save({"ids": ids, "logits": trained(ids).logits}, tmp_path / "ref.pt")
    script = textwrap.dedent("""
        import sys
        sys.modules["peft"] = None  # loading must not need peft
        import torch
        from linearize import LinearizedForCausalLM  # registers the Auto classes
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
        ref = torch.load(sys.argv[2])
        with torch.no_grad():
            assert torch.allclose(model(ref["ids"]).logits, ref["logits"], atol=1e-5)
    """)
    subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "ref.pt")], check=True, cwd=HERE)


RESUMABLE = textwrap.dedent("""
    # Runs a transfer stage; each optimizer step sleeps so the test can kill the run mid-way.
    import sys, time, torch
    sys.path.insert(0, sys.argv[3])
    from helpers import perturb_new_parameters, tiny_base, tiny_smollm2_dir
    from linearize.convert.convert import convert
    from linearize.distill import objectives
    from linearize.distill.config import TrainConfig
    from linearize.distill.trainer import train
    delay = float(sys.argv[4])
    forward = objectives.TransferObjective.forward
    def slow(self, ids):
        time.sleep(delay)
        return forward(self, ids)
    objectives.TransferObjective.forward = slow
    if len(sys.argv) > 5 and sys.argv[5] == "slow-save":  # hang inside the write of checkpoint step-4
        import accelerate
        original = accelerate.Accelerator.save_state
        def hanging(self, output_dir=None, **kw):
            result = original(self, output_dir, **kw)
            if output_dir.endswith("step-4"):
                time.sleep(60)
            return result
        accelerate.Accelerator.save_state = hanging
    teacher = tiny_base("llama")
    student = convert(teacher, "lolcats", window=4)
    blocks = torch.randint(3, 128, (64, 32), generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(stage="transfer", tokens=8 * 2 * 32, seq_len=32, batch_size=2, lr=1e-2, save_every=2)
    trained, summary, history = train(student, teacher, blocks, cfg, sys.argv[1], resume=True, progress=False)
    torch.save(trained.state_dict(), sys.argv[2])
""")


def _run(tmp_path, work, result, delay, *extra):
    script = tmp_path / "resumable.py"
    script.write_text(RESUMABLE)
    return subprocess.Popen([sys.executable, str(script), str(work), str(result), HERE, str(delay), *extra])


def _wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, "training ended before the checkpoint appeared"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_sigkill_then_resume_ends_with_the_same_weights(tmp_path):
    full = _run(tmp_path, tmp_path / "full", tmp_path / "full.pt", 0.0)
    assert full.wait() == 0
    run = _run(tmp_path, tmp_path / "killed", tmp_path / "killed.pt", 0.3)
    _wait_for(tmp_path / "killed" / "checkpoints" / "step-4" / "state.json", run)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert not (tmp_path / "killed.pt").exists()
    assert latest_checkpoint(tmp_path / "killed").name == "step-4"
    resumed = _run(tmp_path, tmp_path / "killed", tmp_path / "killed.pt", 0.0)
    assert resumed.wait() == 0
    a, b = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "killed.pt")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_kill_during_checkpoint_write_leaves_nothing_resume_would_load(tmp_path):
    run = _run(tmp_path, tmp_path / "w", tmp_path / "w.pt", 0.0, "slow-save")
    _wait_for(tmp_path / "w" / "checkpoints" / ".tmp-step-4" / "model.safetensors", run)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert latest_checkpoint(tmp_path / "w").name == "step-2"  # the half-written step-4 is ignored
    assert not (tmp_path / "w" / "checkpoints" / "step-4").exists()


def test_data_packing_split_and_chat_template(tmp_path):
    from linearize.convert.bases import load_tokenizer

    tok = load_tokenizer("llama")
    docs = [f"Document number {i}. " + "word " * (20 + i) for i in range(40)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    train_a, held_a = build_blocks(tmp_path / "docs.jsonl", tok, seq_len=16, heldout_fraction=0.1, seed=1)
    train_b, held_b = build_blocks(tmp_path / "docs.jsonl", tok, seq_len=16, heldout_fraction=0.1, seed=1)
    assert torch.equal(train_a, train_b) and torch.equal(held_a, held_b)
    train_c, _ = build_blocks(tmp_path / "docs.jsonl", tok, seq_len=16, heldout_fraction=0.1, seed=2)
    assert not torch.equal(train_c[: len(train_a)], train_a)
    held_numbers = {t for t in tok.decode(held_a.flatten()).split() if t.rstrip(".").isdigit()}
    train_numbers = {t for t in tok.decode(train_a.flatten()).split() if t.rstrip(".").isdigit()}
    assert held_numbers and not held_numbers & train_numbers  # split by document: no overlap
    assert windows(pack(["a b", "c"], tok), 2).shape[1] == 2
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]})
        + "\n"
    )
    rendered = documents(chat, tok)
    assert "<|im_start|>user" in rendered[0] and "hello" in rendered[0]
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="cannot read"):
        documents(tmp_path / "broken.jsonl", tok)


def test_retrieval_exercises_state_facts_and_ask_for_them():
    """--retrieval-share turns that share of the blocks, spread through the order, into exercises of the same
    length: each fact's value stated once in the text and once again as the answer at the end, after the question
    naming its key; the other blocks are untouched; the same seed gives the same exercises."""
    from linearize.convert.bases import load_tokenizer
    from linearize.distill.data import EXERCISE_FACTS, with_retrieval_exercises

    tok = load_tokenizer("llama")
    text = " ".join(f"Line {i} of the manual says the option is set." for i in range(800))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    blocks = torch.tensor([ids[i * 256 : (i + 1) * 256] for i in range(8)])
    same, none = with_retrieval_exercises(blocks, tok, 0.0)
    assert none == 0 and torch.equal(same, blocks)
    turned, n = with_retrieval_exercises(blocks, tok, 0.5, seed=3)
    assert n == 4 and turned.shape == blocks.shape
    changed = [i for i in range(8) if not torch.equal(turned[i], blocks[i])]
    assert changed == [1, 3, 5, 7]  # every second block
    for i in changed:
        decoded = tok.decode(turned[i])
        body, asks = decoded.split("\n", 1)
        pairs = re.findall(r"code for (\w+ \d+)\?? (?:A: |was )(\S+?)\.?(?:\n|$)", asks)
        assert len(pairs) == EXERCISE_FACTS, asks
        for key, value in pairs:
            assert re.search(rf"{key}(?: is|:| has the code) {re.escape(value)}\.", body), (key, value, body)
        assert "Line" in body  # the block's own text holds the facts
    again, _ = with_retrieval_exercises(blocks, tok, 0.5, seed=3)
    other, _ = with_retrieval_exercises(blocks, tok, 0.5, seed=4)
    assert torch.equal(again, turned) and not torch.equal(other, turned)
    short, n_short = with_retrieval_exercises(blocks[:, :40], tok, 1.0)
    assert n_short == 0 and torch.equal(short, blocks[:, :40])  # too short to hold them: left as text


def test_main_job_on_a_tiny_base(tmp_path, capsys):
    """convert -> transfer -> kd -> perplexity -> save, through the CLI, on a tiny base with a real tokenizer."""
    from transformers import AutoModelForCausalLM

    from linearize.cli import main

    base_dir = tiny_smollm2_dir(tmp_path / "tiny")
    out = tmp_path / "out"
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("Text of another kind than the training corpus, for the out-of-domain measurement. " * 60)
    code = main(
        [
            "--base",
            str(base_dir),
            "--to",
            "lolcats",
            "--window",
            "8",
            "--decay",
            "32",
            "--tokens",
            "2048",
            "--seq-len",
            "64",
            "--batch-size",
            "2",
            "--out",
            str(out),
            "--eval-data",
            str(unseen),
            "--eval-lengths",
            "64,256",
            "--eval-tokens",
            "512",
            "--passkey-lengths",
            "128",
            "--mqar-pairs",
            "4",
            "--transfer-mode",
            "streamed",
            "--sparse-cache",
            "4",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "LoLA's sparse cache: 4 keys per key/value head in 1 converted layers" in captured.err
    assert "in-domain held-out (64-token windows): teacher" in captured.out
    assert f"{unseen}, 256-token windows: teacher" in captured.out and "by position 0-64" in captured.out
    assert "passkey @128: teacher" in captured.out and "MQAR 4 pairs: teacher" in captured.out
    model = AutoModelForCausalLM.from_pretrained(out)
    steps = [h.get("stage", h.get("step")) for h in model.config.linearize["history"][1:]]
    q = model.config.linearize["heldout_perplexity"]
    # Trained without the sparse cache (training-free), measured and saved with it.
    assert steps == ["transfer", "kd", "sparse_cache"] and q["in_domain"]["ratio"] > 0
    assert set(q["out_of_domain"][str(unseen)]["windows"]) == {"64", "256"}
    assert q["cost"]["train_tokens"] > 0 and q["cost"]["state_bytes_4k"] < q["cost"]["kv_bytes_4k"]
    # The main job's recipe fills what was not given: 4 sinks, kept layers ranked on multi-key retrieval
    # probes (12/30 of 2 -> 1).
    mixers = [m for m in model.config.mixers if m]
    assert len(mixers) == 1 and mixers[0]["decay"] == 32 and mixers[0]["sinks"] == 4 and mixers[0]["window"] == 8
    assert mixers[0]["sparse_cache"] == 4
    evidence = model.config.linearize["plan_evidence"]
    assert evidence["method"] == "kl" and evidence["ranked_by"] == "kl-multikey"
    from linearize.card import model_card

    card = str(model_card(out))
    assert "## Quality" in card and f"- {unseen}, 256-token windows: teacher" in card and "- passkey @128" in card
    assert "- LoLA's sparse cache: 4 keys per key/value head kept exact" in card
    assert card.index(f"{unseen}, 64-token windows") < card.index(f"{unseen}, 256-token windows")  # numeric order
    assert (out / "training" / "transfer" / "loss_curve_transfer.png").exists()
    assert (out / "training" / "kd" / "history.json").exists() and not (tmp_path / "out.work").exists()
    assert recorded_config(out, "transfer")["transfer_mode"] == "streamed"  # --transfer-mode reached the trainer


def recorded_config(out, stage):
    """The TrainConfig a stage recorded in its (newest) checkpoint."""
    (state,) = (out / "training" / stage / "checkpoints").glob("step-*/state.json")
    return json.loads(state.read_text())["config"]


def test_distill_verb_trains_a_saved_checkpoint_and_resumes(tmp_path, capsys):
    """`linearize distill CKPT --stage transfer` on a converted tiny checkpoint whose base is a local folder."""
    from transformers import AutoModelForCausalLM

    from linearize.cli import main

    base_dir, ckpt, out = tiny_smollm2_dir(tmp_path / "tiny"), tmp_path / "ckpt", tmp_path / "distilled"
    assert main(["convert", "--base", str(base_dir), "--to", "hedgehog", "--out", str(ckpt)]) == 0
    args = [
        "distill",
        str(ckpt),
        "--stage",
        "transfer",
        "--tokens",
        "1024",
        "--seq-len",
        "64",
        "--batch-size",
        "2",
        "--save-every",
        "2",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "transfer: 8 steps" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.linearize["history"][-1]["stage"] == "transfer"
    assert recorded_config(out, "transfer")["transfer_mode"] == "whole"  # the CPU default
    assert main(args) == 2 and "pass --overwrite" in capsys.readouterr().err  # out exists now
    bad = tmp_path / "zero3-nogather.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": False}}))
    assert main([*args[:-1], str(tmp_path / "y"), "--deepspeed", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "stage3_gather_16bit_weights_on_model_save is False; ZeRO-3 needs true" in err
    assert (
        main(
            [
                "distill",
                str(ckpt),
                "--stage",
                "transfer",
                "--data",
                str(tmp_path / "nope.jsonl"),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "unknown data" in capsys.readouterr().err


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"batch_size": 0}, "bad --batch-size 0: a whole number >= 1"),
        ({"seq_len": 1}, "bad --seq-len 1"),
        ({"tokens": -5}, "bad --tokens -5"),
        ({"grad_accum": 2.5}, "bad --grad-accum 2.5"),
        ({"lr": 0}, "bad --lr 0"),
        ({"lr": float("nan")}, "bad --lr nan"),
        ({"temperature": -1.0}, "bad --temperature -1.0"),
        ({"top_k": 0}, "bad --top-k 0"),
        ({"kd_chunk": 0}, "bad --kd-chunk 0"),
        ({"min_lr_ratio": 1.5}, "--min-lr-ratio"),
        ({"save_minutes": -1}, "bad --save-minutes -1"),
        ({"retrieval_share": -0.1}, "bad --retrieval-share -0.1"),
        ({"retrieval_share": 1.5}, "bad --retrieval-share 1.5: a share of the blocks, at most 1"),
        ({"train": "lm_head"}, "unknown --train 'lm_head'"),
        ({"stage": "sft"}, "unknown --stage 'sft'"),
    ],
)
def test_degenerate_train_settings_are_one_clear_error(settings, message):
    from linearize.errors import SettingError

    with pytest.raises(SettingError, match=re.escape(message)):
        small_cfg(settings.pop("stage", "kd"), **settings)


def test_train_config_is_a_schema_with_help_and_choices():
    """Every TrainConfig field carries a help text, and a fixed set of values as its choices, in the metadata
    argparse-based generators read (transformers' HfArgumentParser): built from it, a parser with no flags gives
    the defaults, and a value outside a field's choices is refused both by the parser and by the config."""
    import dataclasses

    from transformers import HfArgumentParser

    from linearize.errors import SettingError

    fields = dataclasses.fields(TrainConfig)
    assert [f.name for f in fields if not f.metadata.get("help")] == []
    choices = {f.name: f.metadata["choices"] for f in fields if "choices" in f.metadata}
    assert set(choices) == {"stage", "transfer_mode", "train", "mixed_precision"}
    parser = HfArgumentParser(TrainConfig)
    assert parser.parse_args_into_dataclasses([]) == (TrainConfig(),)
    assert parser.parse_args_into_dataclasses(["--stage", "kd", "--top-k", "5"])[0] == TrainConfig(stage="kd", top_k=5)
    for name, allowed in choices.items():
        assert getattr(TrainConfig(), name) in allowed
        with pytest.raises(SystemExit):
            parser.parse_args_into_dataclasses([f"--{name}", "bogus"])
        with pytest.raises(SettingError, match="choose one of " + re.escape(", ".join(allowed))):
            TrainConfig(**{name: "bogus"})


@pytest.mark.parametrize(
    "args,message",
    [
        (["--batch-size", "0"], "bad --batch-size 0"),
        (["--seq-len", "1"], "bad --seq-len 1"),
        (["--tokens", "1"], "bad --tokens 1: a whole number >= 2"),
        (["--grad-accum", "0"], "bad --grad-accum 0"),
        (["--save-minutes", "-1"], "bad --save-minutes -1"),
    ],
)
def test_main_job_refuses_degenerate_train_settings_before_anything(tmp_path, capsys, args, message):
    """One line, exit 2, before a model loads: an interrupted run's work folder is still there, no output."""
    from linearize.cli import main

    base_dir = tmp_path / "tiny"
    tiny_base("llama").save_pretrained(base_dir)
    out, work = tmp_path / "out", tmp_path / "out.work"
    (work / "transfer").mkdir(parents=True)
    (work / "transfer" / "keep.txt").write_text("an interrupted run's checkpoint")
    assert main(["--base", str(base_dir), "--to", "lolcats", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("linearize: error: ") and message in lines[0], err
    assert not out.exists() and (work / "transfer" / "keep.txt").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--lr", "0"], "bad --lr 0.0"),
        (["--top-k", "0"], "bad --top-k 0"),
        (["--kd-chunk", "0"], "bad --kd-chunk 0"),
        (["--lora-r", "0"], "bad --lora-r 0"),
        (["--train", "bogus"], "unknown --train 'bogus'"),
    ],
)
def test_distill_verb_refuses_degenerate_train_settings_before_loading(tmp_path, capsys, args, message):
    from linearize.cli import main

    out = tmp_path / "out"
    assert main(["distill", str(tmp_path / "not-loaded"), "--stage", "kd", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("linearize: error: ") and message in err, err
    assert not out.exists()
