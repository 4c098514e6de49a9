"""benchmarks/scale_rehearsal.py's pieces on tiny shapes (no timing asserted): the random base of a real config,
the batch search's doubling and bisection, and a stage run in-process through the trainer with its batch search."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import scale_rehearsal as sr  # noqa: E402

from convert_memory import SHAPES, random_base  # noqa: E402


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-qwen3"])
def test_random_base_is_a_working_model_of_its_config(shape):
    a, b = random_base(SHAPES[shape]), random_base(SHAPES[shape])
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # seeded
    assert (a.lm_head.weight is a.model.embed_tokens.weight) == SHAPES[shape]["tie_word_embeddings"]
    fresh = type(a.model.rotary_emb)(config=a.config)  # to_empty left the rotary buffers unset: were they made?
    assert torch.equal(a.model.rotary_emb.inv_freq, fresh.inv_freq)
    assert torch.isfinite(a(torch.arange(3, 19)[None]).logits).all()


def test_largest_batch_doubles_then_bisects():
    seen = []

    def fits(b):
        seen.append(b)
        return b <= 13, {}

    lo, hi, probes, stopped = sr.largest_batch(fits, 64, seconds=60)
    assert seen[:5] == [1, 2, 4, 8, 16] and lo <= 13 < hi and hi - lo <= max(1, lo // 4) and not stopped
    assert sr.largest_batch(lambda b: (True, {}), 8, seconds=60)[:2] == (8, None)  # capped: a lower bound


@pytest.mark.parametrize("stage", ["transfer", "kd"])
def test_stage_runs_through_the_trainer_and_searches(stage):
    args = sr.parse_args(
        [
            "--shape",
            "tiny-llama",
            "--device",
            "cpu",
            "--steps",
            "1",
            "--seq-len",
            "16",
            "--batch-size",
            "2",
            "--batch-search",
            "on",
            "--search-seq-lens",
            "16",
            "--max-batch",
            "2",
        ]
    )
    result = sr.stage_train(args, stage)
    assert result["steps"] == 1 and len(result["step_seconds"]) == 1 and result["tokens_per_s"] > 0
    assert result["peak_bytes"] >= result["models_bytes"] > 0
    (search,) = result["search"]
    assert search["largest"] == 2 and [p["batch"] for p in search["probes"]] == [1, 2]
