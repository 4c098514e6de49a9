"""The recall suite in ordinary text (evals/recall.py's text_recall): prompts reproducible and sized as asked,
values never in the haystack by accident, and scores right on scripted models with known answers (one that
copies the asked value, one that never does, one that finds needles only in the first half); the depth x
length PNG shows what the JSON holds; and `linearize eval --suite recall` end to end on a tiny model."""

import inspect
import json
import re

import pytest
import torch

from linearize.cli import main
from linearize.convert.bases import load_tokenizer
from linearize.convert.convert import convert
from linearize.evals import recall_plot
from linearize.evals.recall import (
    _WORD_VALUES,
    RECALL_TASKS,
    Haystack,
    depth_buckets,
    recall_sample,
    recall_samples,
    score_answer,
    text_recall,
)

from helpers import tiny_smollm2

MODULES = ("json", "argparse", "re", "csv", "heapq", "subprocess", "ftplib", "smtplib", "difflib", "collections")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("llama")  # the embedded SmolLM2 tokenizer


@pytest.fixture(scope="module")
def docs():
    """Ordinary text that exists offline: the docstrings of a few standard-library modules."""
    import importlib

    return [inspect.getdoc(importlib.import_module(m)) for m in MODULES]


def copier(prompt, max_new_tokens=None):
    """Reads the prompt as a perfect model would: finds the asked key's needle(s) and says the value(s)."""
    if "pass key" in prompt.split("\n\n")[0]:
        return " " + re.search(r"The pass key is (\d+)\.", prompt).group(1) + "."
    key = re.search(r"magic \w+s? for (\S+) mentioned in the text\? ", prompt).group(1)
    return " " + ", ".join(re.findall(rf"magic \w+ for {re.escape(key)} is: (\S+)\.", prompt)) + "."


def first_half_reader(prompt, max_new_tokens=None):
    """The copier, blind past the middle of the text: a needle after half the prompt's characters is not seen."""
    answer = copier(prompt)
    first = re.search(r"(The pass key is|magic \w+ for \S+ is:) ", prompt).start()
    return answer if first < len(prompt) / 2 else " I do not know."


def test_prompts_are_reproducible_sized_and_hide_their_needles(tokenizer, docs):
    hay = Haystack(tokenizer, docs)
    a = recall_samples(tokenizer, hay, lengths=(256, 512), depths=3, prompts=3, seed=1)
    assert a == recall_samples(tokenizer, Haystack(tokenizer, docs), lengths=(256, 512), depths=3, prompts=3, seed=1)
    assert a != recall_samples(tokenizer, hay, lengths=(256, 512), depths=3, prompts=3, seed=2)
    assert len(a) == len(RECALL_TASKS) * 2 * 3 * 3
    assert {s["kind"] for s in a if s["task"] == "niah_single"} == {"number", "word", "uuid"}
    for s in a:
        n = len(tokenizer(s["prompt"])["input_ids"])
        assert abs(n - s["length"]) <= 6, (s["task"], s["length"], n)
        label, low, high = next(b for b in depth_buckets(3) if b[0] == s["bucket"])
        assert low <= s["depth"] <= high
        rest = s["prompt"]
        for needle in s["needles"]:
            assert rest.count(needle) == 1
            rest = rest.replace(needle, "")
        assert not any(v in rest for v in s["answers"])  # no value in the text around its needles
        assert len(s["answers"]) == (4 if s["task"] == "niah_multivalue" else 1)
        assert score_answer(s, copier(s["prompt"])) == 1.0


def test_values_already_in_the_haystack_are_never_drawn(tokenizer, docs):
    kept = ("wombat", "zeppelin")
    line = " ".join(f"The {w} is here." for w in _WORD_VALUES if w not in kept)
    hay = Haystack(tokenizer, ["\n".join([line] * 20)])  # every cut holds every other word value
    words = [recall_sample(tokenizer, hay, "niah_single", 512, depth_buckets(1)[0], i, kind="word") for i in range(12)]
    assert {s["answers"][0] for s in words} <= set(kept)


@pytest.mark.parametrize("model,expected", [(copier, 1.0), (lambda p, max_new_tokens=None: " 12345 no idea", 0.0)])
def test_scripted_models_score_one_and_zero_at_every_length_and_depth(tokenizer, docs, model, expected):
    r = text_recall(None, tokenizer, lengths=(128, 256), depths=3, prompts=2, generate=model, documents=docs)
    assert set(r["scores"]) == set(RECALL_TASKS) and r["depth_buckets"] == ["0-33%", "33-67%", "67-100%"]
    for task, by_length in r["scores"].items():
        assert set(by_length) == {"128", "256"}
        for cell in by_length.values():
            assert cell["score"] == expected and cell["n"] == 6
            assert {d: c["score"] for d, c in cell["by_depth"].items()} == dict.fromkeys(r["depth_buckets"], expected)


def distractor_reader(prompt, max_new_tokens=None):
    """Matches the wrong key: says the value of the first needle in the text that is not the asked one."""
    key = re.search(r"magic \w+s? for (\S+) mentioned in the text\? ", prompt).group(1)
    others = [v for k, v in re.findall(r"magic \w+ for (\S+) is: (\S+)\.", prompt) if k != key]
    return " " + (others[0] if others else "none") + "."


def test_each_prompts_output_is_kept_and_a_distractors_value_is_named(tokenizer, docs):
    kw = dict(tasks=("niah_single", "niah_multikey"), lengths=(256,), depths=2, prompts=2, documents=docs)
    r = text_recall(None, tokenizer, generate=copier, **kw)
    assert len(r["outputs"]) == 8 and all(o["score"] == 1.0 and not o["distractors_given"] for o in r["outputs"])
    assert [o["output"].strip(" .") for o in r["outputs"]] == [o["answers"][0] for o in r["outputs"]]
    wrong = text_recall(None, tokenizer, generate=distractor_reader, **kw)
    multikey = [o for o in wrong["outputs"] if o["task"] == "niah_multikey"]
    assert len(multikey) == 4 and all(o["score"] == 0.0 for o in multikey)
    assert all(o["distractors_given"] == [o["output"].strip(" .")] for o in multikey)
    assert {o["bucket"] for o in multikey} == {"0-50%", "50-100%"}
    table = recall_plot.recall_table([{"name": "wrong-key", "quality": {"recall": wrong}}])
    assert "- wrong-key at 256: 4 of its 4 misses gave a distractor's value" in table
    assert "misses" not in recall_plot.recall_table([{"name": "copier", "quality": {"recall": r}}])


def test_a_model_that_reads_the_first_half_only_fails_the_deep_buckets(tokenizer, docs):
    r = text_recall(
        None,
        tokenizer,
        tasks=("passkey", "niah_single", "niah_multivalue"),
        lengths=(1024, 2048),
        depths=4,
        prompts=3,
        generate=first_half_reader,
        documents=docs,
    )
    for task, by_length in r["scores"].items():
        for length, cell in by_length.items():
            assert cell["by_depth"]["0-25%"]["score"] == 1.0, (task, length)
            assert cell["by_depth"]["75-100%"]["score"] == 0.0, (task, length)
    # By the needles' own depths: 1 above half way, 0 below (the multivalue needles all sit in the bucket).
    samples = {
        s["prompt"]: s
        for s in recall_samples(tokenizer, Haystack(tokenizer, docs), ("niah_multikey",), (256,), depths=2, prompts=4)
    }
    shallow = lambda p, max_new_tokens=None: copier(p) if samples[p]["depth"] < 0.5 else " no"  # noqa: E731
    r = text_recall(
        None, tokenizer, tasks=("niah_multikey",), lengths=(256,), depths=2, prompts=4, generate=shallow, documents=docs
    )
    assert {d: c["score"] for d, c in r["scores"]["niah_multikey"]["256"]["by_depth"].items()} == {
        "0-50%": 1.0,
        "50-100%": 0.0,
    }


def last_half_reader(prompt, max_new_tokens=None):
    """The copier, blind before the middle of the prompt (a state that keeps only the recent half)."""
    last = max(m.start() for m in re.finditer(r"(The pass key is|magic \w+ for \S+ is:) ", prompt))
    return copier(prompt) if last >= len(prompt) / 2 else " I do not know."


def test_read_twice_gives_the_text_twice_and_a_recent_reader_finds_every_needle(tokenizer, docs):
    """Just-Read-Twice prompting: the same text with the same needles twice before the question, about twice
    the tokens; a reader that keeps only the prompt's recent half fails the shallow needles once and finds every
    needle when the text is read twice."""
    hay = Haystack(tokenizer, docs)
    bucket = depth_buckets(3)[0]
    once = recall_sample(tokenizer, hay, "niah_single", 512, bucket, 0)
    twice = recall_sample(tokenizer, hay, "niah_single", 512, bucket, 0, read_twice=True)
    intro, question = once["prompt"].split("\n\n", 1)[0], once["prompt"].rsplit("\n\n", 1)[1]
    body = once["prompt"][len(intro) + 2 : -len(question) - 2]
    assert twice["prompt"] == f"{intro}\n\n{body}\n\nThe same text again:\n\n{body}\n\n{question}"
    assert twice["prompt"].count(twice["needles"][0]) == 2 and twice["answers"] == once["answers"]
    assert 1.9 < len(tokenizer(twice["prompt"])["input_ids"]) / len(tokenizer(once["prompt"])["input_ids"]) < 2.1
    kw = dict(tasks=("passkey", "niah_single"), lengths=(512,), depths=3, prompts=3, documents=docs)
    plain = text_recall(None, tokenizer, generate=last_half_reader, **kw)
    jrt = text_recall(None, tokenizer, generate=last_half_reader, read_twice=True, **kw)
    assert jrt["read_twice"] and not plain["read_twice"]
    for task in kw["tasks"]:
        assert plain["scores"][task]["512"]["by_depth"]["0-33%"]["score"] == 0.0
        assert jrt["scores"][task]["512"]["score"] == 1.0


def test_grid_png_shows_the_json_scores(tokenizer, docs, tmp_path):
    r = text_recall(
        None,
        tokenizer,
        tasks=("passkey", "niah_multikey"),
        lengths=(128, 256),
        depths=2,
        prompts=2,
        generate=first_half_reader,
        documents=docs,
    )
    result = json.loads(json.dumps({"name": "student", "quality": {"recall": r}}))  # as eval.json holds it
    shown = recall_plot.plot_recall(result, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    for task in ("passkey", "niah_multikey"):
        for i, depth in enumerate(r["depth_buckets"]):
            for j, length in enumerate(("128", "256")):
                assert shown[task][i][j] == r["scores"][task][length]["by_depth"][depth]["score"]
    table = recall_plot.recall_table([result])
    assert "**passkey**" in table and "| student | 128 |" in table and "depth 0-50%" in table


def test_cli_eval_recall_teacher_and_student(tokenizer, tmp_path, capsys):
    base = tiny_smollm2(len(tokenizer))
    student, teacher = tmp_path / "tiny-lolcats", tmp_path / "tiny-base"
    convert(base, "lolcats", keep_attention="1", window=4).save_pretrained(student)
    base.save_pretrained(teacher)
    for path in (student, teacher):
        tokenizer.save_pretrained(path)
    hay = tmp_path / "hay"
    hay.mkdir()
    for m in MODULES[:4]:
        import importlib

        (hay / f"{m}.txt").write_text(inspect.getdoc(importlib.import_module(m)))
    out = tmp_path / "ev"
    code = main(
        [
            "eval",
            str(student),
            "--teacher",
            str(teacher),
            "--suite",
            "recall",
            "--recall-lengths",
            "96,128",
            "--recall-tasks",
            "passkey,niah_single",
            "--recall-depths",
            "2",
            "--recall-prompts",
            "2",
            "--haystack",
            str(hay),
            "--recall-read-twice",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "eval.json").read_text())
    assert [r.get("role") for r in results] == ["teacher", "student"]
    for r in results:
        rec = r["quality"]["recall"]
        assert rec["haystack"] == [str(hay)] and set(rec["scores"]) == {"passkey", "niah_single"}
        assert rec["read_twice"] is True
        assert set(rec["scores"]["passkey"]) == {"96", "128"} and rec["scores"]["passkey"]["96"]["n"] == 4
        assert "mqar" in r["quality"]
    md = (out / "eval.md").read_text()
    assert "each text given twice" in md
    assert "**niah_single**" in md and "tiny-base (teacher) | 96 |" in md and "| tiny-lolcats | 128 |" in md
    assert (out / "recall-teacher-tiny-base.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "recall-student-tiny-lolcats.png").read_bytes()[:4] == b"\x89PNG"
    alone = tmp_path / "alone"  # a base model evaluated alone is neither teacher nor student
    one = ["--recall-lengths", "96", "--recall-tasks", "passkey", "--recall-depths", "1", "--recall-prompts", "1"]
    assert main(["eval", str(teacher), "--suite", "recall", *one, "--haystack", str(hay), "--out", str(alone)]) == 0
    assert [p.name for p in alone.glob("recall-*.png")] == ["recall-model-tiny-base.png"]
    capsys.readouterr()
    assert (
        main(["eval", str(student), "--suite", "recall", "--recall-lengths", "4096", "--out", str(tmp_path / "no")])
        == 2
    )
    assert "--recall-lengths 4096 reaches past" in capsys.readouterr().err and not (tmp_path / "no").exists()
    limit = base.config.max_position_embeddings
    twice = ["--recall-lengths", str(limit // 2 + 64), "--recall-read-twice", "--out", str(tmp_path / "no")]
    assert main(["eval", str(student), "--suite", "recall", *twice]) == 2
    err = capsys.readouterr().err
    assert "with --recall-read-twice" in err and f"use at most {limit // 2}" in err and not (tmp_path / "no").exists()
    assert (
        main(["eval", str(student), "--suite", "recall", "--recall-tasks", "bogus", "--out", str(tmp_path / "no")]) == 2
    )
    assert "unknown --recall-tasks 'bogus'" in capsys.readouterr().err


def test_cli_eval_with_a_sparse_cache(tokenizer, tmp_path, capsys):
    """``eval --sparse-cache N`` evaluates a trained student with LoLA's cache (named so in the results), and changes
    its perplexity past the first selection (position 63); a model without LoLCATs-style layers is refused in one
    line, nothing written."""
    base = tiny_smollm2(len(tokenizer))
    student, plain = tmp_path / "tiny-lolcats", tmp_path / "tiny-gla"
    torch.manual_seed(0)
    convert(base, "lolcats", keep_attention="1", window=4, decay=16).save_pretrained(student)
    convert(base, "gla", keep_attention="1").save_pretrained(plain)
    for path in (student, plain):
        tokenizer.save_pretrained(path)
    ppl = {}
    for budget in (None, 4):
        out = tmp_path / f"ev-{budget}"
        extra = [] if budget is None else ["--sparse-cache", str(budget)]
        args = ["eval", str(student), "--suite", "ppl", "--seq-len", "128", "--max-tokens", "256", "--out", str(out)]
        assert main([*args, *extra]) == 0, capsys.readouterr().err
        (result,) = json.loads((out / "eval.json").read_text())
        ppl[budget] = result["quality"]["perplexity"]
        assert result["name"] == "tiny-lolcats" + ("" if budget is None else " +sparse-cache 4")
    assert ppl[4] != pytest.approx(ppl[None], rel=1e-6)
    capsys.readouterr()
    refused = ["eval", str(plain), "--suite", "ppl", "--seq-len", "128", "--sparse-cache", "4"]
    assert main([*refused, "--out", str(tmp_path / "no")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("linearize: error:")]
    assert len(errors) == 1 and "--sparse-cache needs converted layers with a softmax window" in errors[0]
    assert not (tmp_path / "no").exists()
    # --sparse-select: another choice of keys, named in the results; without --sparse-cache, refused in one line.
    out = tmp_path / "ev-mean"
    args = ["eval", str(student), "--suite", "ppl", "--seq-len", "128", "--max-tokens", "256", "--out", str(out)]
    assert main([*args, "--sparse-cache", "4", "--sparse-select", "mean"]) == 0, capsys.readouterr().err
    (result,) = json.loads((out / "eval.json").read_text())
    assert result["name"] == "tiny-lolcats +sparse-cache 4 (mean)"
    capsys.readouterr()
    assert main([*args[:6], "--sparse-select", "mean", "--out", str(tmp_path / "no")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("linearize: error:")]
    assert len(errors) == 1 and "--sparse-select chooses the keys of a sparse cache" in errors[0]
    assert not (tmp_path / "no").exists()
