"""Issue #23's prepared GPU script (benchmarks/gpu_speed.py, run by scripts/gpu_speed.sh): its CPU dry run covers
every section and writes its results as it goes; the serving measurement's batch (copies of one prefilled cache)
decodes as the one-row cache does; a section's budget cuts it. No timing is asserted."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from linearize.convert.convert import convert  # noqa: E402
from linearize.evals import bench  # noqa: E402

import gpu_speed  # noqa: E402
from helpers import tiny_smollm2  # noqa: E402


def test_cpu_dry_run_measures_every_section(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_speed.py"),
            "--cpu",
            "--out",
            str(tmp_path),
            "--seconds",
            "150",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    records = [json.loads(line) for line in (tmp_path / "gpu_speed.jsonl").read_text().splitlines()]
    sections = {r["section"]: r for r in records if r["kind"] == "section"}
    assert list(sections) == [name for name, _ in gpu_speed.SECTIONS]
    assert {name: r["status"] for name, r in sections.items()} == {name: "done" for name in sections}, proc.stdout[
        -4000:
    ]
    by_kind = {}
    for r in records:
        by_kind.setdefault(r["kind"], []).append(r)
    prefill = {(r["shape"], r["model"], r["length"], r["batch"]) for r in by_kind["prefill"]}
    for shape in ("smollm2", "llama-1b"):
        for model in ("teacher", "student"):
            for length in ("4k", "16k", "32k", "64k"):
                assert (shape, model, length, 1) in prefill and (shape, model, length, 4) in prefill
            assert {
                r["length"]
                for r in by_kind["decode"]
                if (r["shape"], r["model"]) == (shape, model) and r["mode"].startswith("eager, Dynamic")
            } == {"4k", "16k", "32k", "64k"}
            (serving,) = [r for r in by_kind["serving"] if (r["shape"], r["model"]) == (shape, model)]
            assert serving["largest"] == 8 and serving["tokens_per_s"] > 0 and serving["length"] == "32k"
    for model in ("teacher", "student"):  # the default as it ships: with its sparse cache
        assert {("smollm2-cache", model, n, 1) for n in ("4k", "16k")} <= prefill
    (shipped,) = [r for r in by_kind["models"] if r["shape"] == "smollm2-cache"]
    assert shipped["settings"]["sparse_cache"] == 256 and shipped["settings"]["window"] == 64
    assert all(r["tokens_per_s"] > 0 and len(r["runs_s"]) >= 1 for r in by_kind["prefill"])
    profiles = {r["model"]: r for r in by_kind["profile"]}
    assert set(profiles) == {"student", "teacher"}
    student = profiles["student"]
    assert student["ops"] and student["aten_ops"] > 0 and student["kernels"] == []  # CPU: no CUDA kernels
    (modules,) = [r for r in by_kind["modules"] if r["model"] == "student"]
    kinds = {m["module"] for m in modules["modules"]}
    assert {"mlp", "LoLCATsAttention (window+linear)", "softmax attention (SDPA)"} <= kinds
    assert {r["mode"] for r in by_kind["decode"] if r["section"] == "graphs"} == {
        "eager, StaticCache",
        "torch.compile(backend='eager') [dry run], StaticCache",
    }
    assert by_kind["env"][0]["dry_run"] and by_kind["models"][0]["student_softmax_layers"] == [1]
    md = (tmp_path / "gpu_speed.md").read_text()
    for heading in (
        "## Prefill",
        "## Decode at batch 1",
        "## Serving throughput",
        "## Profile: smollm2 student",
        "## Sections",
    ):
        assert heading in md
    assert md in proc.stdout  # printed at the end
    assert gpu_speed.render(records) == md  # --render of the JSONL gives the same tables
    assert (tmp_path / "profile_smollm2_student.txt").exists()


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_replicated_cache_decodes_as_the_one_row_cache(which):
    base = tiny_smollm2(128, layers=3)
    model = base if which == "teacher" else convert(base, "lolcats", keep_attention=[1], window=4, decay=16, sinks=2)
    cache, token, _ = bench.prefill(model, 11, prefill_chunk=0)  # past the window and its sinks
    _, token = bench.decode(model, cache, token, 1)  # a step: what the layers keep for steps is made (for one row)
    before = [(t, t.clone()) for t in _tensors(cache)]
    big = bench.replicate(cache, 3)
    assert big.get_seq_length() == cache.get_seq_length() == 12
    with torch.no_grad():
        three = model(token.expand(3, 1), cache=big, use_cache=True).logits
        assert all(t is now and torch.equal(t, old) for (t, old), now in zip(before, _tensors(cache)))  # untouched
        one = model(token, cache=cache, use_cache=True).logits
    assert three.shape[0] == 3
    for row in three:
        torch.testing.assert_close(row, one[0], rtol=1e-5, atol=1e-5)


def _tensors(cache):
    out = []
    for layer in cache.layers:
        for v in vars(layer).values():
            for t in v.values() if isinstance(v, dict) else [v]:
                if isinstance(t, torch.Tensor):
                    out.append(t)
    return out


def test_serving_search_doubles_until_out_of_memory(monkeypatch):
    seen = []

    def fake(model, cache, token, batch, steps, warmup=1):
        seen.append((batch, steps))
        if batch >= 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return 0.001 * batch, None

    monkeypatch.setattr(bench, "decode_batch", fake)
    model = type("M", (), {"device": torch.device("cpu")})()
    cache = type("C", (), {"layers": []})()
    row = bench.serving(model, cache, None, steps=5, max_batch=64)
    assert [b for b, _ in seen] == [1, 2, 4, 8, 16, 8] and seen[-1] == (8, 5)
    assert (row["largest"], row["first_not_fitting"], row["stopped_by"]) == (8, 16, "out of memory")
    assert row["tokens_per_s"] == pytest.approx(8 / 0.008)
    seen.clear()
    row = bench.serving(model, cache, None, steps=5, max_batch=4)  # capped: a lower bound
    assert (
        [b for b, _ in seen] == [1, 2, 4, 4] and row["first_not_fitting"] is None and row["stopped_by"] == "max batch 4"
    )
    seen.clear()
    row = bench.serving(model, cache, None, steps=5, batch=3)  # a given batch: no search
    assert seen == [(3, 5)] and row["batch"] == 3 and row["probes"] == []


def test_a_section_budget_cuts_the_section_and_the_run_goes_on():
    with pytest.raises(gpu_speed.SectionTimeout):
        with gpu_speed.time_limit(0.2):
            t0 = time.time()
            while time.time() - t0 < 5:
                pass
    t0 = time.time()
    with gpu_speed.time_limit(0.2):  # ended in time: no alarm left behind
        pass
    time.sleep(0.3)


def test_a_failing_measurement_is_recorded_and_the_section_goes_on(tmp_path):
    args = gpu_speed.parse_args(["--cpu", "--out", str(tmp_path)])
    b = gpu_speed.Bench(args, gpu_speed.Results(tmp_path))
    assert b.attempt("prefill x", lambda: 1 / 0) is None
    assert b.attempt("prefill y", lambda: 7) == 7
    (skip,) = [r for r in b.res.records if r["kind"] == "skip"]
    assert skip["what"] == "prefill x" and skip["why"].startswith("error: ZeroDivisionError")

    def spent():
        raise gpu_speed.SectionTimeout("budget")

    with pytest.raises(gpu_speed.SectionTimeout):  # the budget's cut is not a measurement's error
        b.attempt("prefill z", spent)
