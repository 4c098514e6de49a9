"""Evaluation: lm-eval through both paths, recall generators and scorers, perplexity, bench, reports."""

import json
import os
import subprocess
import sys

import pytest
import torch

from linearize.cli import main
from linearize.convert.bases import load_tokenizer
from linearize.convert.convert import convert
from linearize.evals import report
from linearize.evals.bench import bench
from linearize.evals.lm_eval_bridge import TINY_GEN, TINY_MC, metrics, run_lm_eval, write_tiny_tasks
from linearize.evals.perplexity import agreement, perplexity
from linearize.evals.recall import mqar_samples, passkey_samples, score_mqar, score_passkey

from helpers import tiny_smollm2


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("llama")  # the embedded SmolLM2 tokenizer


@pytest.fixture(scope="module")
def tiny_ckpt(tokenizer, tmp_path_factory):
    """A tiny converted model with a real tokenizer, saved like a user's checkpoint."""
    base = tiny_smollm2(len(tokenizer))
    model = convert(base, "lolcats", keep_attention="1", window=4)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-lolcats"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, base


def test_lm_eval_cli_and_python_api_agree(tiny_ckpt, tokenizer, tmp_path):
    path, model, _ = tiny_ckpt
    tasks = write_tiny_tasks(tmp_path / "tasks")
    ours = metrics(run_lm_eval(model, tokenizer, [TINY_MC, TINY_GEN], include_path=tasks))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={path},trust_remote_code=True",
            "--device",
            "cpu",
            "--tasks",
            f"{TINY_MC},{TINY_GEN}",
            "--include_path",
            str(tasks),
            "--output_path",
            str(tmp_path / "out"),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
    )
    harness = metrics(json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"])
    for task in (TINY_MC, TINY_GEN):
        for metric in ("acc", "acc_norm", "exact_match"):
            if metric in ours[task]:
                assert harness[task][metric] == pytest.approx(ours[task][metric], abs=1e-9), (task, metric)
    assert ours[TINY_MC]["sample_len"] == 12


def test_passkey_generator_is_deterministic_and_scorer_checks_answers(tokenizer):
    a = passkey_samples(tokenizer, 512, seed=3)
    assert a == passkey_samples(tokenizer, 512, seed=3)
    assert a != passkey_samples(tokenizer, 512, seed=4)
    assert len(a) == 6 and {s["depth"] for s in a} == {0.1, 0.5, 0.9}
    n_tokens = len(tokenizer(a[0]["prompt"])["input_ids"])
    assert 400 < n_tokens <= 560
    answers = {s["prompt"]: s["answer"] for s in a}
    assert all(s["answer"] in s["prompt"] for s in a)
    assert score_passkey(a, lambda p: f" {answers[p]}. Done") == 1.0
    assert score_passkey(a, lambda p: " 12345") == 0.0
    assert score_passkey(a, lambda p: " I do not know") == 0.0


def test_mqar_generator_is_deterministic_and_scorer_checks_answers(tokenizer):
    a = mqar_samples(tokenizer, num_pairs=8, num_samples=4, seed=1)
    assert a == mqar_samples(tokenizer, num_pairs=8, num_samples=4, seed=1)
    assert all(len(s["value_spans"]) == 8 for s in a)
    right = lambda ids: torch.cat([ids[1:], ids[:1]])  # predicts every next token
    assert score_mqar(a, right) == 1.0
    assert score_mqar(a, lambda ids: torch.zeros_like(ids)) == 0.0
    tail = lambda ids: torch.where(torch.arange(len(ids)) >= len(ids) - 12, right(ids), torch.zeros_like(ids))
    assert 0.0 < score_mqar(a, tail) < 0.5  # only the last few recalls are answered


def test_perplexity_and_agreement(tiny_ckpt):
    _, model, base = tiny_ckpt
    ids = torch.randint(0, 1000, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids).logits[:, :-1]
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    result = perplexity(model, ids, batch_size=2)
    assert result["tokens"] == 57 and abs(result["nll"] - expected.item()) < 1e-5
    same = agreement(model, model, ids)
    assert same["top1_agreement"] == 1.0 and abs(same["kl"]) < 1e-6
    other = agreement(model, base, ids)
    assert other["kl"] > 0 and other["top1_agreement"] < 1.0


def test_bench_cache_bytes_constant_for_recurrent_growing_for_kv(tiny_ckpt):
    _, model, base = tiny_ckpt
    recurrent = convert(base, "lolcats", window=4)  # every layer converted
    rows = bench(recurrent, contexts=(16, 64), decode_tokens=2, repeats=1, prefill_chunk=32)
    assert rows[0]["cache_bytes"] == rows[1]["cache_bytes"] == recurrent.cache_bytes(64)[0]
    teacher_rows = bench(base, contexts=(16, 64), decode_tokens=2, repeats=1, prefill_chunk=32)
    # KV bytes after prefill: tokens x 2 layers x (k, v) x 2 KV heads x head_dim 8 x fp32.
    assert [r["cache_bytes"] for r in teacher_rows] == [n * 2 * 2 * 2 * 8 * 4 for n in (16, 64)]
    for row in rows + teacher_rows:
        assert row["prefill_tokens_per_s"] > 0 and row["decode_ms_per_token"] > 0


def test_bench_serving_throughput_at_a_batch_or_the_largest(tiny_ckpt, tmp_path, capsys):
    path, model, _ = tiny_ckpt
    rows = bench(model, contexts=(16, 40), decode_tokens=2, repeats=1, prefill_chunk=32, batch="max", max_batch=4)
    for row in rows:  # nothing runs out of memory here: the search stops at --max-batch (a lower bound)
        serving = row["serving"]
        assert [p["batch"] for p in serving["probes"]] == [1, 2, 4] and serving["stopped_by"] == "max batch 4"
        assert (serving["batch"], serving["largest"], serving["first_not_fitting"]) == (4, 4, None)
        assert (
            serving["tokens_per_s"] > 0 and serving["cache_bytes_per_sequence"] >= row["cache_bytes"]
        )  # (decoded past it)
    out = tmp_path / "be"
    assert (
        main(
            [
                "bench",
                str(path),
                "--contexts",
                "16,24",
                "--decode-tokens",
                "2",
                "--repeats",
                "1",
                "--batch",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    (result,) = json.loads((out / "bench.json").read_text())
    assert [s["serving"]["batch"] for s in result["speed"]] == [3, 3]
    assert all(s["serving"]["probes"] == [] and s["serving"]["tokens_per_s"] > 0 for s in result["speed"])
    md = (out / "bench.md").read_text()
    assert "serving tok/s @16 (batch)" in md and "serving tok/s @24 (batch)" in md and (out / "bench.png").exists()
    for bad in ("0", "two", "-1"):
        assert main(["bench", str(path), "--batch", bad, "--out", str(tmp_path / "bad")]) == 2
        assert "--batch takes a whole number >= 1 or 'max'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_report_tables():
    results = [
        {
            "name": "teacher",
            "quality": {"perplexity": 10.0, "passkey": {"512": 1.0}},
            "speed": [
                {"context": 512, "decode_ms_per_token": 10.0, "cache_bytes": 2**20, "prefill_tokens_per_s": 100.0}
            ],
        },
        {
            "name": "student",
            "quality": {"perplexity": 12.5, "top1_agreement": 0.8, "passkey": {"512": 0.0}},
            "speed": [{"context": 512, "decode_ms_per_token": 5.0, "cache_bytes": 2**19, "prefill_tokens_per_s": 50.0}],
        },
    ]
    md = report.comparison(results)
    assert "| teacher | 10 | 1 |  |" in md and "| student | 12.5 | 0 | 0.8 |" in md
    assert "5.0 (0.50x)" in md and "| 0.5 |" in md


def test_cli_eval_and_report(tiny_ckpt, tmp_path, capsys):
    path, _, _ = tiny_ckpt
    out = tmp_path / "ev"
    code = main(
        [
            "eval",
            str(path),
            "--teacher",
            str(path),
            "--suite",
            "ppl,agreement",
            "--max-tokens",
            "1024",
            "--seq-len",
            "128",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "eval.json").read_text())
    assert [r.get("role") for r in results] == ["teacher", "student"]
    assert results[1]["quality"]["top1_agreement"] == 1.0
    assert results[0]["quality"]["perplexity"] == pytest.approx(results[1]["quality"]["perplexity"])
    code = main(["report", str(out / "eval.json"), "--out", str(tmp_path / "r.md")])
    assert code == 0 and "perplexity" in (tmp_path / "r.md").read_text()
    capsys.readouterr()
    assert main(["eval", str(path), "--suite", "bogus"]) == 2
    assert "unknown --suite 'bogus'" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.json")]) == 2


def test_cli_eval_by_position_with_teacher(tiny_ckpt, tmp_path, capsys):
    path, _, _ = tiny_ckpt
    data = tmp_path / "texts"
    data.mkdir()
    (data / "one.txt").write_text(" ".join(f"token{i % 50} and text" for i in range(400)))
    out = tmp_path / "ev"
    code = main(
        [
            "eval",
            str(path),
            "--teacher",
            str(path),
            "--suite",
            "ppl",
            "--data",
            str(data),
            "--split",
            "all",
            "--seq-len",
            "128",
            "--max-tokens",
            "256",
            "--buckets",
            "0,64,4096",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    teacher, student = json.loads((out / "eval.json").read_text())
    assert teacher["role"] == "teacher" and student["text"] == {"data": str(data), "split": "all", "seq_len": 128}
    assert list(student["quality"]["by_position"]) == ["0-64", "64-127"]
    for label, bucket in student["quality"]["by_position"].items():
        assert bucket["tokens"] == 2 * (64 if label == "0-64" else 63)
        assert bucket["ratio"] == pytest.approx(1.0)  # the same model on the same windows
        assert bucket["perplexity"] == pytest.approx(teacher["quality"]["by_position"][label]["perplexity"])
    assert student["quality"]["perplexity_ratio"] == pytest.approx(1.0)
    assert len(student["quality"]["position_nll"]) == 127
    md = (out / "eval.md").read_text()
    assert "ppl @0-64" in md and "ppl @64-127" in md and "(1.00x)" in md
    assert (out / "positions.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["eval", str(path), "--seq-len", "4096", "--out", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max_position_embeddings 256" in err and not (tmp_path / "no").exists()
