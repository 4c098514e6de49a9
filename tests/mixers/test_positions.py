"""Per-position perplexity, evaluation splits and length_quality, against scripted models whose
per-position losses are known exactly; the eval CLI's argument errors."""

import math
from types import SimpleNamespace

import pytest
import torch

from linearize.cli import main
from linearize.data.packing import text_ids
from linearize.data.texts import DataError, split_documents
from linearize.evals.perplexity import (
    DEFAULT_BUCKETS,
    bucket_ranges,
    heldout_ids,
    length_quality,
    perplexity,
    position_nll,
)


class Scripted(torch.nn.Module):
    """A 'model' whose next-token NLL at position p of each window is ``nll(ids)[b, p]``, exactly: it reads
    the next token from its input and gives it probability exp(-nll), spreading the rest evenly."""

    def __init__(self, vocab, nll):
        super().__init__()
        self.vocab, self.nll, self.calls = vocab, nll, 0
        self.register_buffer("anchor", torch.zeros(()))

    @property
    def device(self):
        return self.anchor.device

    def forward(self, ids, use_cache=None):  # evaluations ask HF models for no cache
        self.calls += 1
        target = self.nll(ids).double()  # [B, T-1]
        q = torch.exp(-target)
        logits = torch.zeros(*ids.shape, self.vocab, dtype=torch.float64)
        logits[:, :-1] = torch.log((1 - q) / (self.vocab - 1))[..., None]
        logits[:, :-1].scatter_(-1, ids[:, 1:, None], torch.log(q)[..., None])
        return SimpleNamespace(logits=logits)


def base_nll(ids):
    """0.5 + 0.01 p, plus 0.1 x (first token of the window mod 3): windows differ, positions differ."""
    p = torch.arange(ids.shape[1] - 1, dtype=torch.float64)
    return 0.5 + 0.01 * p + 0.1 * (ids[:, :1] % 3).double()


def test_position_nll_and_buckets_equal_the_scripted_losses():
    n, t, vocab = 5, 300, 16
    ids = torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = torch.arange(n)  # offsets 0, .1, .2, 0, .1: mean 0.08
    expected = [0.5 + 0.01 * p + 0.08 for p in range(t - 1)]
    model = Scripted(vocab, base_nll)
    per_position = position_nll(model, ids, batch_size=2)
    assert per_position.dtype == torch.float64 and per_position.shape == (t - 1,)
    assert max(abs(a - b) for a, b in zip(per_position.tolist(), expected)) < 1e-6

    model.calls = 0
    result = perplexity(model, ids, batch_size=2, buckets=DEFAULT_BUCKETS)
    assert model.calls == 3  # one forward pass per batch gives overall and per-position numbers
    assert result["tokens"] == n * (t - 1)
    assert result["nll"] == pytest.approx(sum(expected) / len(expected), abs=1e-6)
    assert list(result["by_position"]) == ["0-64", "64-256", "256-299"]
    for label, (a, b) in {"0-64": (0, 64), "64-256": (64, 256), "256-299": (256, 299)}.items():
        bucket = result["by_position"][label]
        mean = sum(expected[a:b]) / (b - a)
        assert bucket["nll"] == pytest.approx(mean, abs=1e-6)
        assert bucket["perplexity"] == pytest.approx(math.exp(mean), rel=1e-6)
        assert bucket["tokens"] == n * (b - a)
    assert max(abs(a - b) for a, b in zip(result["position_nll"], expected)) < 1e-6
    plain = perplexity(model, ids, batch_size=2)
    assert "by_position" not in plain and plain["nll"] == pytest.approx(result["nll"], abs=1e-12)


def test_buckets_clip_to_the_window():
    labels = lambda edges, positions: [label for label, _, _ in bucket_ranges(edges, positions)]
    assert labels(DEFAULT_BUCKETS, 2047) == ["0-64", "64-256", "256-1024", "1024-2047"]
    assert labels(DEFAULT_BUCKETS, 255) == ["0-64", "64-255"]
    assert labels(DEFAULT_BUCKETS, 40) == ["0-40"]
    assert labels(DEFAULT_BUCKETS, 4096) == ["0-64", "64-256", "256-1024", "1024-4096"]
    assert labels(DEFAULT_BUCKETS, 8191) == ["0-64", "64-256", "256-1024", "1024-4096", "4096-8191"]
    assert labels((64, 256), 100) == ["64-100"]  # positions before the first edge are in no bucket
    assert bucket_ranges((0, 64), 64) == [("0-64", 0, 64)]


@pytest.fixture(scope="module")
def tokenizer():
    from linearize.convert.bases import load_tokenizer

    return load_tokenizer("llama")


def write_corpus(folder, n_docs, words=120):
    folder.mkdir(parents=True)
    docs = []
    for i in range(n_docs):
        text = f"Document {i} begins. " + " ".join(f"word{(i * 7 + j) % 97}" for j in range(words)) + f" End {i}."
        (folder / f"doc{i:02d}.txt").write_text(text)
        docs.append(text)
    return docs


def test_split_all_uses_every_document_and_heldout_one_split(tokenizer, tmp_path):
    docs = write_corpus(tmp_path / "c", 20)
    ids = lambda doc: tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]  # noqa: E731
    every = text_ids(tokenizer, tmp_path / "c", split="all").tolist()
    assert every == [t for doc in docs for t in ids(doc)]  # each document's ids, then EOS
    _, held = split_documents(docs, 0.05, 0)
    assert len(held) == 1
    assert text_ids(tokenizer, tmp_path / "c").tolist() == ids(held[0])
    # deterministic: the same windows every call (teacher and student)
    a = heldout_ids(tokenizer, tmp_path / "c", seq_len=64, max_tokens=512, split="all")
    assert torch.equal(a, heldout_ids(tokenizer, tmp_path / "c", seq_len=64, max_tokens=512, split="all"))
    assert a.shape == (8, 64) and a.flatten().tolist() == every[:512]
    assert heldout_ids(tokenizer, tmp_path / "c", seq_len=64, max_tokens=10, split="all").shape == (1, 64)
    # one document: nothing to hold out, but the whole of it is usable
    write_corpus(tmp_path / "one", 1)
    with pytest.raises(DataError, match="fewer than one window of 32"):
        heldout_ids(tokenizer, tmp_path / "one", seq_len=32)
    assert heldout_ids(tokenizer, tmp_path / "one", seq_len=32, split="all").shape[1] == 32
    with pytest.raises(DataError, match="unknown split 'some'"):
        heldout_ids(tokenizer, tmp_path / "one", split="some")


def test_length_quality_ratios(tokenizer, tmp_path):
    write_corpus(tmp_path / "c", 12)
    vocab = len(tokenizer)
    teacher = Scripted(vocab, base_nll)
    same = length_quality(teacher, teacher, tokenizer, tmp_path / "c", seq_lens=(16, 128), max_tokens=256)
    assert same["split"] == "all" and same["data"] == str(tmp_path / "c")
    assert set(same["windows"]) == {"16", "128"}
    assert same["windows"]["16"]["tokens"] == 16 * 15 and same["windows"]["128"]["tokens"] == 2 * 127
    for w in same["windows"].values():
        assert w["ratio"] == pytest.approx(1.0, abs=1e-9)
        assert all(b["ratio"] == pytest.approx(1.0, abs=1e-9) for b in w["by_position"].values())
        assert w["position_nll"]["teacher"] == w["position_nll"]["student"]
    assert list(same["windows"]["128"]["by_position"]) == ["0-64", "64-127"]
    assert list(same["windows"]["16"]["by_position"]) == ["0-15"]

    # worse student: the same loss up to position 63, log(2) more from position 64 on (tolerances: float32
    # log-softmax over the 49k-token vocabulary is exact to about 1e-5 per token)
    worse = Scripted(vocab, lambda ids: base_nll(ids) + math.log(2) * (torch.arange(ids.shape[1] - 1) >= 64))
    result = length_quality(teacher, worse, tokenizer, tmp_path / "c", seq_lens=(16, 128), max_tokens=256)
    w = result["windows"]["128"]
    assert w["by_position"]["0-64"]["ratio"] == pytest.approx(1.0, abs=1e-9)
    assert w["by_position"]["64-127"]["ratio"] == pytest.approx(2.0, rel=1e-4)
    assert w["ratio"] == pytest.approx(math.exp(math.log(2) * 63 / 127), rel=1e-4)
    assert result["windows"]["16"]["ratio"] == pytest.approx(1.0, abs=1e-9)
    gap = torch.tensor(w["position_nll"]["student"]) - torch.tensor(w["position_nll"]["teacher"])
    assert gap[:64].abs().max() < 1e-9 and (gap[64:] - math.log(2)).abs().max() < 1e-4

    with pytest.raises(DataError, match="fewer than one window of 100000"):
        length_quality(teacher, teacher, tokenizer, tmp_path / "c", seq_lens=(100000,))


def test_plot_positions_writes_a_png(tmp_path):
    from linearize.evals.report import plot_positions

    curve = [2.0 + 1.0 / (p + 1) for p in range(2047)]
    path = plot_positions({"teacher": curve, "student": [v * 1.1 for v in curve]}, tmp_path / "p.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*"))


def test_cli_eval_argument_errors_are_one_line(tmp_path, capsys):
    from helpers import tiny_base

    folder = tmp_path / "tiny"
    tiny_base("llama").save_pretrained(folder)  # max_position_embeddings 256
    out = tmp_path / "ev"
    cases = [
        (["--seq-len", "512"], "--seq-len 512 is longer than"),
        (["--buckets", "0,64,32"], "--buckets takes increasing non-negative whole numbers"),
        (["--buckets", "0,-1"], "--buckets takes increasing"),
        (["--buckets", "a,b"], "--buckets takes increasing"),
        (["--split", "train"], "unknown --split 'train'"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert main(["eval", str(folder), "--by-position", "--out", str(out), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and err.startswith("linearize: error: "), err
        assert not out.exists()
