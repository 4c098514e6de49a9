"""`linearize --recipe NAME`: each published method's preset converts and trains as it says, fills only what the
command line leaves unset, is printed and recorded in the checkpoint, and bad combinations fail in one line."""

import pytest
from transformers import AutoConfig

from linearize.cli import main
from linearize.recipes import RECIPES, as_flags

from helpers import tiny_smollm2_dir

# A tiny budget: the job's stages run a few steps; no out-of-domain measurement, no recall.
TINY = ["--tokens", "512", "--seq-len", "32", "--batch-size", "2", "--eval-data", "none"]
TINY += ["--eval-tokens", "128", "--passkey-lengths", "", "--mqar-pairs", ""]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return tiny_smollm2_dir(tmp_path_factory.mktemp("recipes") / "tiny", layers=4)


@pytest.mark.parametrize("name", list(RECIPES))
def test_each_preset_converts_and_trains_as_it_says(name, base_dir, tmp_path, capsys):
    out = tmp_path / name
    assert main(["--base", str(base_dir), "--recipe", name, "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    recipe = RECIPES[name]
    config = AutoConfig.from_pretrained(out, trust_remote_code=True)
    recorded = config.linearize["recipe"]
    assert recorded["name"] == name and f"recipe {name} ({recipe.about}): {as_flags(recorded)}" in err
    mixers = config.mixers
    converted = [m for m in mixers if m]
    assert converted and all(m["target"] == recipe.target for m in converted)
    layer = {k: v for k, v in recipe.settings.items() if k not in ("rank_by", "recency_fraction")}
    assert all(m.items() >= layer.items() for m in converted), (layer, converted)  # the preset's layer, as built
    kept = len(mixers) - len(converted)
    if recipe.keep_share is not None:
        assert kept == max(1, round(recipe.keep_share * len(mixers)))
        assert config.linearize["plan_evidence"]["ranked_by"] == recipe.settings["rank_by"]
    elif recipe.keep_attention == "none":
        assert kept == 0
    history = config.linearize["history"][1:]
    stages = [h["stage"] for h in history if "stage" in h]
    skipped = {s for s, o in recipe.stages.items() if o.get("skip")}
    assert stages == [s for s in ("transfer", "kd") if s not in skipped]
    if recipe.settings.get("sparse_cache"):  # put on after training
        assert history[-1] == {"step": "sparse_cache", "budget": recipe.settings["sparse_cache"]}


def test_the_command_line_wins_over_the_preset(base_dir, tmp_path, capsys):
    out = tmp_path / "liger-wide"
    assert main(["--base", str(base_dir), "--recipe", "liger", "--window", "8", "--out", str(out), *TINY]) == 0
    assert "--window 8" in capsys.readouterr().err
    config = AutoConfig.from_pretrained(out, trust_remote_code=True)
    assert all(m["window"] == 8 and m["feature_map"] == "softmax" for m in config.mixers)
    assert config.linearize["recipe"]["convert_settings"]["window"] == 8
    from linearize.card import model_card

    assert f"- recipe `liger` ({RECIPES['liger'].about}): `--to gla --keep-attention none" in str(model_card(out))


def test_the_default_target_takes_the_lolcats_preset(base_dir, tmp_path, capsys):
    """No --recipe, no --to: the main job's own recipe, printed and recorded like any preset."""
    out = tmp_path / "default"
    assert main(["--base", str(base_dir), "--decay", "16", "--out", str(out), *TINY]) == 0
    config = AutoConfig.from_pretrained(out, trust_remote_code=True)
    recorded = config.linearize["recipe"]
    assert recorded["name"] == "lolcats" and recorded["convert_settings"]["decay"] == 16
    assert recorded["keep_attention"] == "auto:2"  # 12/30 of 4 layers
    assert (
        f"recipe lolcats ({RECIPES['lolcats'].about}): --to lolcats --keep-attention auto:2 --decay 16"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--recipe", "bogus"], "unknown --recipe 'bogus': choose from lolcats, liger"),
        (["--recipe", "liger", "--to", "mamba"], "--recipe liger converts to gla: drop --to mamba"),
    ],
)
def test_bad_recipe_is_one_line_and_writes_nothing(base_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["--base", str(base_dir), "--out", str(out), *args, *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("linearize: error: ") and message in err, err
    assert not out.exists()


def test_the_default_recipes_sparse_cache_needs_a_window():
    """The main job's recipe puts LoLA's sparse cache beside the window; a command line without a window drops it
    (the cache has nowhere to live), unless it asks for both, which the main job then refuses in one line."""
    recipe = RECIPES["lolcats"]
    assert recipe.record("lolcats", 30)["convert_settings"]["sparse_cache"] == 256
    assert "sparse_cache" not in recipe.record("lolcats", 30, {"window": 0})["convert_settings"]
    assert recipe.record("lolcats", 30, {"window": 0, "sparse_cache": 8})["convert_settings"]["sparse_cache"] == 8
