"""Resume by default: checkpoints are written without being asked for, a killed run continues from the newest one
and ends where an uninterrupted run ends, the main job does not rerun a finished stage, and resume always says
what it resumed from, or that there was nothing to resume."""

import copy
import json

import pytest
import torch

from linearize.convert.convert import convert
from linearize.distill import objectives
from linearize.distill.checkpoints import latest_checkpoint
from linearize.distill.config import TrainConfig
from linearize.distill.trainer import train

from helpers import tiny_base, tiny_smollm2_dir


class Killed(Exception):
    """Stands for the run being killed."""


def forward_counter(monkeypatch, objective, kill_after=None):
    """Count the forward passes of ``objective`` (a trainer objective class); raise Killed after ``kill_after``."""
    forward, calls = objective.forward, {"n": 0}

    def counted(self, ids):
        calls["n"] += 1
        if kill_after is not None and calls["n"] > kill_after:
            raise Killed
        return forward(self, ids)

    monkeypatch.setattr(objective, "forward", counted)
    return calls


def blocks():
    return torch.randint(3, 128, (64, 32), generator=torch.Generator().manual_seed(0))


def cfg(**kw):  # 6 optimizer steps of 2 x 32 tokens; checkpoint settings left at their defaults
    return TrainConfig(**{**dict(stage="transfer", tokens=6 * 2 * 32, seq_len=32, batch_size=2, lr=1e-2), **kw})


def resume_lines(capsys, stage="transfer"):
    """The trainer's own lines (on stderr by default) about resuming ``stage``."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"{stage}: ")]


def test_default_settings_checkpoint_and_a_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch, capsys):
    teacher = tiny_base("llama")
    student = convert(teacher, "lolcats", window=4)
    fresh = copy.deepcopy(student)
    full, _, full_history = train(copy.deepcopy(student), teacher, blocks(), cfg(), tmp_path / "full", progress=False)

    forward_counter(monkeypatch, objectives.TransferObjective, kill_after=4)  # killed during step 5
    with pytest.raises(Killed):
        train(student, teacher, blocks(), cfg(), tmp_path / "run", progress=False)
    # The default writes a checkpoint every tenth of the stage (every step here), keeping only the newest.
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-4"]

    monkeypatch.undo()
    calls = forward_counter(monkeypatch, objectives.TransferObjective)
    capsys.readouterr()
    resumed, summary, history = train(
        copy.deepcopy(fresh), teacher, blocks(), cfg(), tmp_path / "run", resume=True, progress=False
    )
    assert resume_lines(capsys) == [
        f"transfer: resuming from {tmp_path / 'run' / 'checkpoints' / 'step-4'} at step 4 of 6 (256 of 384 tokens seen)"
    ]
    assert calls["n"] == 2  # only the 2 steps left ran
    assert summary["steps"] == 6 and [h["step"] for h in history] == list(range(1, 7))
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in full_history], rel=1e-5)
    a, b = full.state_dict(), resumed.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_checkpoints_by_time_when_steps_are_off(tmp_path, monkeypatch):
    teacher = tiny_base("llama")
    forward_counter(monkeypatch, objectives.TransferObjective, kill_after=3)
    with pytest.raises(Killed):  # every step is past the (tiny) time limit, so each one writes a checkpoint
        train(
            convert(teacher, "lolcats", window=4),
            teacher,
            blocks(),
            cfg(save_every=0, save_minutes=1e-9),
            tmp_path,
            progress=False,
        )
    assert latest_checkpoint(tmp_path).name == "step-3"


def test_resume_with_nothing_to_resume_says_so_and_starts_fresh(tmp_path, capsys):
    teacher = tiny_base("llama")
    _, summary, _ = train(
        convert(teacher, "lolcats", window=4),
        teacher,
        blocks(),
        cfg(tokens=2 * 2 * 32),
        tmp_path / "empty",
        resume=True,
        progress=False,
    )
    checkpoints = tmp_path / "empty" / "checkpoints"
    assert resume_lines(capsys) == [
        f"transfer: nothing to resume (no complete checkpoint in {checkpoints}); starting fresh"
    ]
    assert summary["steps"] == 2


def test_main_job_resume_skips_finished_stages_and_ends_like_an_uninterrupted_run(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from linearize import pipeline
    from linearize.pipeline import main_job

    base = tiny_smollm2_dir(tmp_path / "tiny")
    data = tmp_path / "docs.jsonl"  # small, so tokenizing it is quick
    data.write_text(
        "".join(
            json.dumps({"text": f"Document {i}: " + " ".join(f"word{(i * j) % 97}" for j in range(60))}) + "\n"
            for i in range(40)
        )
    )
    # 512 tokens: transfer 4 steps, kd 3 steps (of 2 x 32 tokens); checkpoint settings left at their defaults.
    kw = dict(
        data=data,
        tokens=512,
        seq_len=32,
        batch_size=2,
        eval_tokens=64,
        eval_corpora=(),
        passkey_lengths=(),
        mqar_pairs=(),
        convert_settings={"window": 4},
    )

    lines = []  # --resume where nothing was ever run: it says so and runs from the start
    ref = main_job(base, "lolcats", tmp_path / "a", resume=True, log=lines.append, **kw)
    assert lines[0] == f"resume: nothing to resume from ({tmp_path / 'a.work'} does not exist); starting fresh"
    assert not (tmp_path / "a.work").exists()

    forward_counter(monkeypatch, objectives.KDObjective, kill_after=2)  # killed during kd's 3rd step
    with pytest.raises(Killed):
        main_job(base, "lolcats", tmp_path / "b", log=print, **kw)
    assert not (tmp_path / "b").exists()
    assert (tmp_path / "b.work" / "results" / "transfer" / "summary.json").exists()

    monkeypatch.undo()
    transfer_calls = forward_counter(monkeypatch, objectives.TransferObjective)
    kd_calls = forward_counter(monkeypatch, objectives.KDObjective)

    def killed(*args, **kwargs):
        raise Killed

    quality = pipeline.quality
    monkeypatch.setattr(pipeline, "quality", killed)  # this time killed after training, measuring quality
    lines = []
    with pytest.raises(Killed):
        main_job(base, "lolcats", tmp_path / "b", resume=True, log=lines.append, **kw)
    assert transfer_calls["n"] == 0 and kd_calls["n"] == 1  # transfer not rerun; kd's last step only
    results = tmp_path / "b.work" / "results"
    transfer_result = results / "transfer"
    assert f"[2/5] transfer: finished in an earlier run, not rerun; its student loaded from {transfer_result}" in lines
    kd_ckpt = tmp_path / "b.work" / "kd" / "checkpoints" / "step-2"
    assert f"kd: resuming from {kd_ckpt} at step 2 of 3 (128 of 192 tokens seen)" in lines
    assert not any("converting" in line for line in lines)

    monkeypatch.setattr(pipeline, "quality", quality)
    lines = []
    result = main_job(base, "lolcats", tmp_path / "b", resume=True, log=lines.append, **kw)
    assert transfer_calls["n"] == 0 and kd_calls["n"] == 1  # neither stage trained again
    assert f"[2/5] transfer: finished in an earlier run, not rerun ({results / 'transfer'})" in lines
    assert f"[3/5] kd: finished in an earlier run, not rerun; its student loaded from {results / 'kd'}" in lines
    assert result["stages"]["transfer"]["steps"] == 4 and result["stages"]["kd"]["steps"] == 3

    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert result["perplexity"]["student"] == pytest.approx(ref["perplexity"]["student"], rel=1e-5)
    assert (tmp_path / "b" / "training" / "kd" / "checkpoints").exists() and not (tmp_path / "b.work").exists()
    assert not (tmp_path / "b" / "training" / "results").exists()
