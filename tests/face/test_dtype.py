"""One dtype per run (--dtype): the stages train a bf16 student against an fp32 teacher (as loaded) with
the trained parameters held in fp32; convert, the main job, distill, eval and bench take --dtype; a bad
value is one line and exit 2."""

import json
import textwrap

import pytest
import torch
from safetensors import safe_open

from linearize.cli import main
from linearize.convert.convert import convert
from linearize.distill.config import TrainConfig
from linearize.distill.deepspeed_config import deepspeed_config
from linearize.distill.trainer import train

from helpers import perturb_new_parameters, tiny_base, tiny_smollm2_dir


def random_blocks(n=64, seq_len=32, seed=0):
    return torch.randint(3, 128, (n, seq_len), generator=torch.Generator().manual_seed(seed))


class RecordingAdamW(torch.optim.AdamW):
    """AdamW that records the dtypes of the parameters it updates."""

    dtypes = []

    def __init__(self, params, **kw):
        params = list(params)
        RecordingAdamW.dtypes = [p.dtype for p in params]
        super().__init__(params, **kw)


def safetensors_dtypes(folder):
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {f.get_slice(k).get_dtype() for k in f.keys()}


def bf16_student(base, target, **settings):
    """A student converted from a bf16 copy of ``base`` (the teacher stays as it was loaded, fp32)."""
    copy = tiny_base(base) if isinstance(base, str) else base
    return convert(copy.to(torch.bfloat16), target, **settings)


def test_transfer_trains_a_bf16_student_against_an_fp32_teacher(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    teacher = tiny_base("llama")
    student = bf16_student("llama", "mamba")
    assert teacher.dtype == torch.float32 and student.dtype == torch.bfloat16
    before = {k: v.clone() for k, v in student.state_dict().items()}
    new = {f"model.layers.{i}.self_attn.{n}" for i, m in student.mixers().items() for n in m.new_parameter_names()}
    seen = []  # the dtype each mixer computes in: its output projection's input
    handles = [
        m.o_proj.register_forward_hook(lambda mod, args, out: seen.append(args[0].dtype))
        for m in student.mixers().values()
    ]
    cfg = TrainConfig(stage="transfer", tokens=12 * 2 * 32, seq_len=32, batch_size=2, lr=5e-2)
    trained, summary, history = train(student, teacher, random_blocks(), cfg, tmp_path, progress=False)
    for h in handles:
        h.remove()
    losses = [h["loss"] for h in history]
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert set(RecordingAdamW.dtypes) == {torch.float32}  # fp32 master weights for the new parameters
    assert seen and set(seen) == {torch.bfloat16}  # the mixers compute in the student's dtype
    assert teacher.dtype == torch.float32  # the teacher stays as loaded
    assert {p.dtype for p in trained.parameters()} == {torch.bfloat16}  # back in the run's dtype
    after = trained.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k not in new)  # frozen: untouched
    assert any(not torch.equal(after[k], before[k]) for k in new)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in trained.modules())  # casts removed


@pytest.mark.parametrize("mode", ["lora+new", "all"])
def test_kd_trains_a_bf16_student_against_an_fp32_teacher(tmp_path, monkeypatch, mode):
    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    teacher = tiny_base("qwen3")
    student = perturb_new_parameters(bf16_student("qwen3", "hedgehog"), scale=2.0)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    blocks = random_blocks(4).repeat(16, 1)  # a few sequences seen repeatedly: the loss must fall on them
    cfg = TrainConfig(
        stage="kd", tokens=12 * 2 * 32, seq_len=32, batch_size=2, lr=1e-2 if mode != "all" else 1e-3, train=mode
    )
    trained, summary, history = train(student, teacher, blocks, cfg, tmp_path, progress=False)
    losses = [h["loss"] for h in history]
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.9 * losses[0], losses
    assert RecordingAdamW.dtypes and set(RecordingAdamW.dtypes) == {torch.float32}
    assert teacher.dtype == torch.float32
    assert {p.dtype for p in trained.parameters()} == {torch.bfloat16}
    assert not [n for n in trained.state_dict() if "lora" in n]
    after = trained.state_dict()
    changed = {k for k in before if not torch.equal(after[k], before[k])}
    expected = ("q_proj", "feature_map") if mode == "lora+new" else ("embed_tokens", "mlp", "norm")
    assert all(any(part in k for k in changed) for part in expected), sorted(changed)
    with torch.no_grad():
        assert torch.isfinite(trained(random_blocks(2, 16, seed=3)).logits).all()


def test_deepspeed_precision_follows_the_students_dtype():
    cfg = TrainConfig(deepspeed="distill/configs/zero2.json")
    for dtype, bf16, fp16 in (
        (torch.bfloat16, True, False),
        (torch.float16, False, True),
        (torch.float32, False, False),
    ):
        ds = deepspeed_config(cfg, dtype)
        assert (ds["bf16"]["enabled"], ds["fp16"]["enabled"]) == (bf16, fp16), dtype


@pytest.fixture
def tiny_dirs(tmp_path):
    """A tiny fp32 llama base with the embedded model's tokenizer, saved as a local folder."""
    return tiny_smollm2_dir(tmp_path / "tiny")


def test_load_base_and_resolve_dtype(tiny_dirs, monkeypatch):
    from linearize.api import load_base, resolve_dtype

    assert load_base(tiny_dirs).dtype == torch.float32  # auto on CPU
    assert load_base(tiny_dirs, dtype="bfloat16").dtype == torch.bfloat16
    assert resolve_dtype("float16") == torch.float16 and resolve_dtype(torch.bfloat16) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_dtype("auto") == torch.bfloat16 and resolve_dtype(None) == torch.bfloat16


def test_bf16_conversion_keeps_rotary_frequencies_in_fp32_as_its_reload_does(tiny_dirs, tmp_path):
    """A bf16 student computes the rotary angles the base and its own reload compute (fp32 inverse
    frequencies): otherwise training and the reloaded checkpoint would disagree, more with position."""
    from transformers import AutoModelForCausalLM

    from linearize.api import load_base

    base = load_base(tiny_dirs, dtype="bfloat16")
    student = convert(base, "lolcats", keep_attention="0")
    assert student.dtype == torch.bfloat16
    assert student.model.rotary_emb.inv_freq.dtype == base.model.rotary_emb.inv_freq.dtype == torch.float32
    student.save_pretrained(tmp_path / "s")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    ids = random_blocks(1, 200, seed=1)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, student(ids).logits)


def test_convert_in_bfloat16_saves_and_reloads_bf16(tiny_dirs, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from linearize.convert.load import load_model

    out32, out16 = tmp_path / "c32", tmp_path / "c16"
    assert main(["convert", "--base", str(tiny_dirs), "--to", "hedgehog", "--out", str(out32)]) == 0
    assert (
        main(["convert", "--base", str(tiny_dirs), "--to", "hedgehog", "--dtype", "bfloat16", "--out", str(out16)]) == 0
    )
    assert "(bfloat16)" in capsys.readouterr().out
    assert safetensors_dtypes(out32) == {"F32"} and safetensors_dtypes(out16) == {"BF16"}
    assert json.loads((out16 / "config.json").read_text())["dtype"] == "bfloat16"
    model, _, _ = load_model(out16, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert AutoModelForCausalLM.from_pretrained(out16).dtype == torch.bfloat16  # as saved
    ref, _, _ = load_model(out32)
    assert ref.dtype == torch.float32
    ids = random_blocks(2, 16, seed=4)
    with torch.no_grad():
        a, b = model(ids).logits.float(), ref(ids).logits
    assert (a - b).abs().max() < 0.05 * b.abs().max()  # the same model, to bf16 precision


def test_main_job_in_bfloat16_end_to_end(tiny_dirs, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    code = main(
        [
            "--base",
            str(tiny_dirs),
            "--to",
            "hedgehog",
            "--dtype",
            "bfloat16",
            "--tokens",
            "1024",
            "--seq-len",
            "32",
            "--batch-size",
            "2",
            "--out",
            str(out),
            "--eval-data",
            "none",
            "--eval-tokens",
            "128",
            "--passkey-lengths",
            "",
            "--mqar-pairs",
            "",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "(bfloat16)" in captured.out and "loading" in captured.err and "in bfloat16" in captured.err
    assert safetensors_dtypes(out) == {"BF16"}
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    history = model.config.linearize["history"]
    assert [h["stage"] for h in history[1:]] == ["transfer", "kd"] and {h["dtype"] for h in history[1:]} == {"bfloat16"}
    assert all(torch.isfinite(torch.tensor([h["first_loss"], h["last_loss"]])).all() for h in history[1:])
    q = model.config.linearize["heldout_perplexity"]["in_domain"]
    assert torch.isfinite(torch.tensor([q["teacher"], q["student"]])).all()


def test_distill_eval_and_bench_take_dtype(tiny_dirs, tmp_path, capsys):
    ckpt, out = tmp_path / "ckpt", tmp_path / "distilled"
    assert main(["convert", "--base", str(tiny_dirs), "--to", "hedgehog", "--out", str(ckpt)]) == 0  # fp32
    assert (
        main(
            [
                "distill",
                str(ckpt),
                "--stage",
                "transfer",
                "--tokens",
                "256",
                "--seq-len",
                "32",
                "--batch-size",
                "2",
                "--dtype",
                "bfloat16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "transfer: 4 steps" in capsys.readouterr().out
    assert safetensors_dtypes(out) == {"BF16"}  # trained and saved in the run's dtype
    assert (
        main(
            [
                "eval",
                str(out),
                "--teacher",
                str(tiny_dirs),
                "--suite",
                "ppl,agreement",
                "--seq-len",
                "32",
                "--max-tokens",
                "64",
                "--dtype",
                "bfloat16",
                "--out",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert [r["dtype"] for r in results] == ["bfloat16", "bfloat16"]
    assert all(torch.isfinite(torch.tensor(r["quality"]["perplexity"])) for r in results)
    assert (
        main(
            [
                "bench",
                str(out),
                "--contexts",
                "16,32",
                "--decode-tokens",
                "2",
                "--repeats",
                "1",
                "--dtype",
                "float16",
                "--out",
                str(tmp_path / "be"),
            ]
        )
        == 0
    )
    bench = json.loads((tmp_path / "be" / "bench.json").read_text())
    assert bench[0]["dtype"] == "float16" and len(bench[0]["speed"]) == 2


@pytest.mark.parametrize("verb", ["main", "convert", "distill", "eval", "bench"])
def test_bad_dtype_is_one_line_exit_2(tiny_dirs, tmp_path, capsys, verb):
    out = tmp_path / "out"
    args = {
        "main": ["--base", str(tiny_dirs), "--out", str(out)],
        "convert": ["convert", "--base", str(tiny_dirs), "--to", "linear", "--out", str(out)],
        "distill": ["distill", str(tiny_dirs), "--stage", "kd", "--out", str(out)],
        "eval": ["eval", str(tiny_dirs), "--out", str(out)],
        "bench": ["bench", str(tiny_dirs), "--out", str(out)],
    }[verb]
    assert main([*args, "--dtype", "float8"]) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "error" in line] == [
        "linearize: error: unknown dtype 'float8': choose auto (bfloat16 on CUDA, float32 on CPU), bfloat16, float16, "
        "float32"
    ], err
    assert "usage:" not in err
    assert not out.exists()


DEEPSPEED_BF16 = textwrap.dedent("""
    # Transfer under DeepSpeed ZeRO-2 (bf16 on, as for a bf16 student): the engine holds the student in bf16, the
    # teacher stays fp32 as loaded (the first step used to fail on the dtype mismatch).
    import json, os, sys, torch
    sys.path.insert(0, sys.argv[2])
    from helpers import tiny_base
    from linearize.convert.convert import convert
    from linearize.distill.trainer import TrainConfig, train
    teacher = tiny_base("llama")
    student = convert(tiny_base("llama").to(torch.bfloat16), "mamba")
    before = {k: v.clone() for k, v in student.state_dict().items()}
    blocks = torch.randint(3, 128, (64, 32), generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(stage="transfer", tokens=8 * 2 * 32, seq_len=32, batch_size=2, lr=5e-2, deepspeed=sys.argv[3])
    trained, summary, history = train(student, teacher, blocks, cfg, sys.argv[1], progress=False)
    after = trained.state_dict()
    json.dump({"losses": [h["loss"] for h in history], "distributed": summary["distributed"],
               "dtypes": sorted({str(p.dtype) for p in trained.parameters()}), "teacher": str(teacher.dtype),
               "changed": sorted(k for k in before if not torch.equal(after[k], before[k]))},
              open(os.path.join(sys.argv[1], "result.json"), "w"))
""")


def test_deepspeed_transfer_with_a_bf16_student_and_an_fp32_teacher(tmp_path):
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, where helpers.py is
    script = tmp_path / "ds_bf16.py"
    script.write_text(DEEPSPEED_BF16)
    out = tmp_path / "run"
    out.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "1",
        "--master_port",
        "29641",
        str(script),
        str(out),
        here,
        os.path.join(here, "..", "distill", "configs", "zero2.json"),
    ]
    proc = subprocess.run(cmd, cwd=here, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "result.json").read_text())
    assert (
        r["distributed"] == "DEEPSPEED_ZERO2" and r["dtypes"] == ["torch.bfloat16"] and r["teacher"] == "torch.float32"
    )
    assert len(r["losses"]) == 8 and all(torch.isfinite(torch.tensor(r["losses"])))
    assert sum(r["losses"][-2:]) < sum(r["losses"][:2]), r["losses"]
    assert r["changed"] and all(".self_attn." in k for k in r["changed"])  # new parameters only
