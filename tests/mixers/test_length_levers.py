"""The levers that keep quality at length: a decayed linear state forgets, attention sinks never leave."""

import pytest
import torch

from linearize.convert.convert import convert
from linearize.errors import SettingError

from helpers import perturb_new_parameters, tiny_base


def last_logits_moved_by_first_token(model, T=120):
    ids = torch.randint(3, 128, (1, T), generator=torch.Generator().manual_seed(0))
    other = ids.clone()
    other[0, 0] = 3 if ids[0, 0] != 3 else 4
    with torch.no_grad():
        return (model(ids).logits[0, -1] - model(other).logits[0, -1]).abs().max().item()


@pytest.mark.parametrize("sinks", [0, 2])
def test_sinks_keep_the_first_tokens_and_decay_forgets_the_rest(sinks):
    """All layers converted, window 4, a strong decay: the first token's influence on the last position
    120 tokens later is gone, unless it is an attention sink."""
    base = tiny_base("llama")
    model = convert(base, "lolcats", window=4, decay=16, sinks=sinks)
    with torch.no_grad():
        for mixer in model.mixers().values():
            mixer.decay_logit.fill_(-3.0)  # decay ~0.05 per token: nothing survives 100 tokens
    moved = last_logits_moved_by_first_token(model)
    assert (moved > 1e-3) == bool(sinks), moved


@pytest.mark.parametrize("target,width", [("lolcats", 25), ("supra", 24), ("gla", 24), ("mamba", 24), ("gdn", 24)])
def test_sink_store_is_in_the_cache_and_bytes_counted(target, width):
    base = tiny_base("qwen3")
    model = perturb_new_parameters(convert(base, target, window=4, sinks=3))
    plain = convert(base, target, window=4)
    assert model.cache_bytes(4096)[0] > plain.cache_bytes(4096)[0]
    ids = torch.randint(3, 128, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(ids, use_cache=True)
    store = out.cache.get_recurrent_state(0, 1)
    # batch, key/value heads (as the teacher caches them), sinks, key + value (+ LoLCATs' normaliser's one)
    assert store.shape == (2, 2, 3, width)


def test_decode_fills_the_sink_slots_a_short_prompt_left_empty():
    """Left-padded prompts of 1 and 4 tokens with 3 sinks: the first row's sinks 1 and 2 are written by
    single-token decode steps, which must give what a cache-free forward of each row alone gives."""
    base = tiny_base("llama")
    model = perturb_new_parameters(convert(base, "lolcats", window=4, decay=16, sinks=3))
    g = torch.Generator().manual_seed(5)
    rows = [torch.randint(3, 128, (n,), generator=g) for n in (1, 4)]
    steps = torch.randint(3, 128, (2, 6), generator=g)
    ids = torch.stack([torch.cat([torch.zeros(4 - len(r), dtype=torch.long), r]) for r in rows])
    mask = (torch.arange(4)[None] >= torch.tensor([[3], [0]])).long()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, use_cache=True)
        logits = []
        for t in range(steps.shape[1]):
            mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
            out = model(steps[:, t : t + 1], attention_mask=mask, cache=out.cache, use_cache=True)
            logits.append(out.logits[:, -1])
        for i, r in enumerate(rows):
            alone = model(torch.cat([r, steps[i]])[None]).logits[0, len(r) :]
            assert (torch.stack(logits, 1)[i] - alone).abs().max() < 1e-4


@pytest.mark.parametrize(
    "settings,message", [({"decay": 4}, "--decay"), ({"sinks": -1}, "--sinks"), ({"decay": 2.5}, "--decay")]
)
def test_bad_lever_settings_are_one_clear_error(settings, message):
    with pytest.raises(SettingError, match=message):
        convert(tiny_base("llama"), "lolcats", **settings)


@pytest.mark.parametrize("target", ["hedgehog", "gla", "mamba", "gdn"])
def test_sinks_need_a_window(target):
    with pytest.raises(SettingError, match="--sinks needs a softmax window"):
        convert(tiny_base("llama"), target, sinks=2)


@pytest.mark.parametrize(
    "target,settings,message",
    [
        ("mamba", {"decay": 16}, "--decay does not apply to --to mamba"),
        ("recurformer", {"window": 4, "sinks": 2}, "--window, --sinks does not apply to --to recurformer"),
        ("gla", {"feature_dim": 8}, "--feature-dim does not apply to --to gla"),
    ],
)
def test_a_setting_the_target_does_not_take_is_refused(target, settings, message):
    """Never dropped silently (RecurFormer builds its layers' settings from its plan)."""
    with pytest.raises(SettingError, match=message):
        convert(tiny_base("llama"), target, **settings)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--window", "1"], "bad --window 1"),
        (["--feature-dim", "0"], "bad --feature-dim"),
        (["--decay", "3"], "bad --decay 3"),
        (["--sinks", "-2"], "bad --sinks"),
        (["--recency-fraction", "1.5"], "bad --recency-fraction 1.5"),
    ],
)
def test_degenerate_settings_exit_2_with_one_line(tmp_path, capsys, args, message):
    """Settings that would break decoding fail before anything is written, with one line naming the value."""
    from linearize.cli import main

    base_dir = tmp_path / "tiny"
    tiny_base("llama").save_pretrained(base_dir)
    out = tmp_path / "out"
    assert main(["convert", "--base", str(base_dir), "--to", "lolcats", "--out", str(out), *args]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("linearize: error: ") and message in errors[0], errors
    assert not out.exists()


def test_main_job_checks_its_eval_corpora_before_training(tmp_path, capsys):
    """An unknown evaluation corpus fails in the first second, not after training: one line, exit 2,
    nothing written."""
    from linearize.cli import main

    base_dir = tmp_path / "tiny"
    tiny_base("llama").save_pretrained(base_dir)
    out = tmp_path / "out"
    assert main(["--base", str(base_dir), "--eval-data", "corpus:nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "linearize: error: unknown corpus 'nope'" in err and "[2/5] transfer" not in err
    assert not out.exists() and not (tmp_path / "out.work").exists()
