"""Recall tasks where recurrent models are known to fail, generated locally and deterministically.

- Passkey retrieval (as in Mohtashami & Jaggi's landmark attention and "Stuffed Mamba"): a five-digit
  key hidden at a chosen depth in filler text of a chosen length; the model must generate it. This is
  the older form, in one repeated filler sentence, which flatters a student (``QUALITY.md``).
- The recall suite users should read (``text_recall``): passkey and needle-in-a-haystack tasks (RULER's
  kinds: one key; several keys, one asked; several values for one key; values that are numbers, words
  and UUIDs) hidden in ordinary text from the out-of-domain corpora, per task, length and depth bucket,
  greedy and short generation scored by exact match of the value in the generated text.
- Multi-query associative recall (MQAR; Arora et al., Zoology): key-value pairs, then the keys again
  in another order; scored teacher-forced: every token of each recalled value must be the argmax.

Each scorer takes a plain callable, so it is tested with scripted "models" that answer right or wrong.
"""

import math
import random
import re

import torch

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


def passkey_samples(tokenizer, context_tokens, depths=(0.1, 0.5, 0.9), per_depth=2, seed=0):
    """Prompts of about ``context_tokens`` tokens with the key at each depth (fraction of the filler)."""
    rng = random.Random(f"passkey-{seed}-{context_tokens}")
    filler_tokens = len(tokenizer(FILLER, add_special_tokens=False)["input_ids"])
    repeats = max(1, (context_tokens - 60) // filler_tokens)
    samples = []
    for depth in depths:
        for _ in range(per_depth):
            key = str(rng.randint(10000, 99999))
            cut = round(depth * repeats)
            needle = f"The pass key is {key}. Remember it. {key} is the pass key. "
            prompt = (
                "There is a pass key hidden in this text. Find it and remember it. "
                + FILLER * cut
                + needle
                + FILLER * (repeats - cut)
                + "What is the pass key? The pass key is"
            )
            samples.append({"prompt": prompt, "answer": key, "context_tokens": context_tokens, "depth": depth})
    return samples


def score_passkey(samples, generate):
    """``generate(prompt) -> text``; a sample is right when the first number in the text is the key."""
    right = 0
    for sample in samples:
        found = re.search(r"\d+", generate(sample["prompt"]))
        right += bool(found) and found.group(0) == sample["answer"]
    return right / len(samples)


def mqar_samples(tokenizer, num_pairs=16, num_samples=8, seed=0):
    """Sequences 'k1 v1, k2 v2, ... | kA vA, kB vB, ...' with the keys queried again in shuffled order;
    returns ids and the token positions of every queried value."""
    rng = random.Random(f"mqar-{seed}-{num_pairs}")
    words = [
        "apple",
        "river",
        "stone",
        "cloud",
        "tiger",
        "piano",
        "lemon",
        "candle",
        "forest",
        "rocket",
        "silver",
        "garden",
        "window",
        "bridge",
        "marble",
        "violet",
        "anchor",
        "falcon",
        "meadow",
        "harbor",
        "copper",
        "saddle",
        "lantern",
        "pepper",
        "glacier",
        "walnut",
        "canyon",
        "orchid",
        "beacon",
        "thunder",
        "velvet",
        "compass",
    ]
    samples = []
    for _ in range(num_samples):
        keys = rng.sample(words, num_pairs)
        values = [str(rng.randint(10, 99)) for _ in keys]
        ids, spans = [], []

        def add(text, mark=False):
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            if mark:
                spans.append((len(ids), len(ids) + len(piece)))
            ids.extend(piece)

        add("Remember each word's number.")
        for k, v in zip(keys, values):
            add(f" {k} {v},")
        add(" Now recall them.")
        for i in rng.sample(range(num_pairs), num_pairs):
            add(f" {keys[i]}")
            add(f" {values[i]}", mark=True)
            add(",")
        samples.append({"ids": ids, "value_spans": spans})
    return samples


def score_mqar(samples, predict):
    """``predict(ids [T]) -> next-token argmax [T]``; a recall is right when all its value tokens are."""
    right = total = 0
    for sample in samples:
        ids = torch.tensor(sample["ids"])
        pred = predict(ids)
        for start, end in sample["value_spans"]:
            right += bool((pred[start - 1 : end - 1] == ids[start:end]).all())
            total += 1
    return right / total


def hf_generate(model, tokenizer, max_new_tokens=8):
    """A ``generate(prompt, max_new_tokens=None)`` callable for the scorers: greedy decoding with the model's
    cache, ``max_new_tokens`` (the callable's, else this default) new tokens at most."""

    @torch.no_grad()
    def generate(prompt, max_new_tokens=max_new_tokens):
        enc = tokenizer(prompt, return_tensors="pt").to(model.device)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
        return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    return generate


def hf_predict(model):
    """A ``predict`` callable for score_mqar: one forward pass, argmax at every position."""

    @torch.no_grad()
    def predict(ids):
        return model(ids[None].to(model.device), use_cache=False).logits[0].argmax(-1).cpu()

    return predict


def recall_suite(model, tokenizer, passkey_lengths=(256, 512, 1024), mqar_pairs=(8, 16), seed=0):
    """Passkey accuracy per context length and MQAR accuracy per number of pairs."""
    gen, pred = hf_generate(model, tokenizer), hf_predict(model)
    return {
        "passkey": {str(n): score_passkey(passkey_samples(tokenizer, n, seed=seed), gen) for n in passkey_lengths},
        "mqar": {str(n): score_mqar(mqar_samples(tokenizer, n, seed=seed), pred) for n in mqar_pairs},
    }


# ---------------------------------------------------------------------------------------------------
# Recall in ordinary text: passkey and needle-in-a-haystack tasks per task, length and depth bucket.

RECALL_TASKS = ("passkey", "niah_single", "niah_multikey", "niah_multivalue")
RECALL_LENGTHS = (1024, 2048, 4096)
RECALL_HAYSTACK = ("corpus:gnu-manuals", "corpus:jargon")
VALUE_KINDS = ("number", "word", "uuid")  # niah_single's values, in turn from one prompt to the next
NEEDLES = 4  # the needles of niah_multikey (one asked, the rest distractors) and of niah_multivalue

_ADJECTIVES = (
    "amber",
    "brisk",
    "calm",
    "dusty",
    "eager",
    "faint",
    "gentle",
    "hollow",
    "icy",
    "jolly",
    "keen",
    "lofty",
    "mellow",
    "nimble",
    "odd",
    "plush",
    "quiet",
    "rusty",
    "sandy",
    "tidy",
    "upbeat",
    "vivid",
    "wary",
    "zesty",
    "bold",
    "crisp",
    "dim",
    "fuzzy",
    "grim",
    "humble",
)
_NOUNS = (
    "otter",
    "kettle",
    "meadow",
    "lantern",
    "harbor",
    "walrus",
    "thimble",
    "glacier",
    "pebble",
    "falcon",
    "orchard",
    "saddle",
    "teapot",
    "quarry",
    "beacon",
    "cactus",
    "dolphin",
    "ember",
    "ferry",
    "goblet",
    "hammock",
    "igloo",
    "jigsaw",
    "kayak",
    "lobster",
    "mitten",
    "nutmeg",
    "oyster",
    "parsnip",
    "raven",
)
_WORD_VALUES = (
    "apricot",
    "bramble",
    "cobalt",
    "dandelion",
    "eucalyptus",
    "flamingo",
    "gardenia",
    "hazelnut",
    "iguana",
    "juniper",
    "kumquat",
    "lavender",
    "mandolin",
    "nectarine",
    "obsidian",
    "pelican",
    "quince",
    "rhubarb",
    "saffron",
    "tangerine",
    "umbrella",
    "vermilion",
    "wombat",
    "xylophone",
    "yarrow",
    "zeppelin",
    "artichoke",
    "buttercup",
    "chinchilla",
    "dragonfly",
    "espresso",
    "fennel",
)


def haystack_documents(specs=RECALL_HAYSTACK):
    """The documents haystacks are cut from: every document of each data spec in ``specs`` (named
    corpora ``corpus:NAME``, fetched on first use; folders; files), in order."""
    from linearize.data.texts import documents

    docs = []
    for spec in specs:
        docs += documents(spec)
    return docs


def depth_buckets(n):
    """``n`` equal depth buckets [(label, low, high)]: depth is the share of the haystack's tokens before the
    needle (0: at the start, 1: at the end)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"depth buckets must be a whole number >= 1, got {n!r}")
    edges = [i / n for i in range(n + 1)]
    return [(f"{round(100 * a)}-{round(100 * b)}%", a, b) for a, b in zip(edges, edges[1:])]


def _value(rng, kind):
    if kind == "number":
        return str(rng.randint(1_000_000, 9_999_999))
    if kind == "word":
        return rng.choice(_WORD_VALUES)
    if kind == "uuid":
        return "-".join("".join(rng.choice("0123456789abcdef") for _ in range(n)) for n in (8, 4, 4, 4, 12))
    if kind == "passkey":
        return str(rng.randint(10000, 99999))
    raise ValueError(kind)


def _occurs(text, needle):
    """Whether ``needle`` occurs in ``text`` as a whole token (not inside a longer number or word)."""
    return re.search(rf"(?<![\w-]){re.escape(needle)}(?![\w-])", text, re.I) is not None


def _fresh(rng, draw, haystack, taken):
    """A value from ``draw()`` that is neither in the haystack nor already used in this prompt."""
    for _ in range(1000):
        v = draw()
        if v not in taken and not _occurs(haystack, v):
            taken.add(v)
            return v
    raise ValueError("cannot draw a value that the haystack does not already hold")


def _task_text(task, kind, keys, values):
    """(intro, needles as strings, question, max_new_tokens) of one prompt."""
    if task == "passkey":
        v = values[0]
        return (
            "There is a pass key hidden in the following text. Find it and remember it.\n\n",
            [f"The pass key is {v}. Remember it. {v} is the pass key."],
            "\n\nWhat is the pass key? The pass key is",
            10,
        )
    noun = {"number": "number", "word": "word", "uuid": "UUID"}[kind]
    intro = (
        f"Some special magic {noun}s are hidden in the following text. Make sure to memorize them. "
        f"I will quiz you about them afterwards.\n\n"
    )
    needles = [f"One of the special magic {noun}s for {k} is: {v}." for k, v in zip(keys, values)]
    if task == "niah_multivalue":
        question = (
            f"\n\nWhat are all the special magic {noun}s for {keys[0]} mentioned in the text? "
            f"The special magic {noun}s for {keys[0]} mentioned in the text are"
        )
        return intro, needles, question, 12 * len(values)
    question = (
        f"\n\nWhat is the special magic {noun} for {keys[0]} mentioned in the text? "
        f"The special magic {noun} for {keys[0]} mentioned in the text is"
    )
    return intro, needles, question, {"number": 12, "word": 8, "uuid": 32}[kind]


class Haystack:
    """Cuts stretches of ordinary text of an exact token count from ``docs`` (one document after
    another from a seeded starting point), with the token offsets that say where each token starts."""

    def __init__(self, tokenizer, docs):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("the recall suite needs a fast tokenizer (it places needles by token offsets)")
        self.tokenizer, self.docs = tokenizer, [d for d in docs if d.strip()]
        if not self.docs:
            raise ValueError("the recall suite needs haystack text: no documents given")

    def cut(self, rng, tokens):
        """(text, [start character of each token]) of ``tokens`` tokens of text, from a random document
        and line, continuing into the next documents as needed."""
        doc = rng.randrange(len(self.docs))
        text = self.docs[doc]
        lines = [0] + [m.end() for m in re.finditer(r"\n", text) if m.end() < len(text)]
        text = text[rng.choice(lines) :]
        while True:
            enc = self.tokenizer(text[: 8 * tokens + 64], add_special_tokens=False, return_offsets_mapping=True)
            if len(enc["input_ids"]) > tokens or len(text) > 8 * tokens + 64:
                break
            doc = (doc + 1) % len(self.docs)
            text = text + "\n\n" + self.docs[doc]
        starts = [a for a, _ in enc["offset_mapping"]][: tokens + 1]
        end = starts[tokens] if len(starts) > tokens else len(text)
        return text[:end], starts[:tokens]


def _insert_at(text, starts, low, high, rng):
    """A character offset where a needle goes, at token depth within [low, high] of the ``len(starts)``
    tokens: after the end of a sentence there if one exists, else at a token's start. Returns (offset,
    depth)."""
    import bisect

    n = len(starts)
    ends = [m.start(1) for m in _SENTENCE_END.finditer(text)]
    inside = [(o, bisect.bisect_left(starts, o) / max(1, n)) for o in ends]
    inside = [(o, d) for o, d in inside if low <= d < high or d == high == 1.0]  # [low, high), the last closed
    if inside:
        return rng.choice(inside)
    first = min(n, math.ceil(low * n))
    i = rng.randint(first, max(first, n if high >= 1.0 else math.ceil(high * n) - 1))
    return (starts[i] if i < n else len(text)), i / max(1, n)


_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(\s)")


def recall_sample(tokenizer, haystack, task, length, bucket, index, seed=0, kind=None, read_twice=False):
    """One prompt of about ``length`` tokens for ``task``, its needle(s) in depth bucket ``bucket``
    ((label, low, high)); reproducible from (task, length, bucket, index, seed) alone. For
    niah_multikey only the asked needle sits in the bucket (the distractors anywhere); for
    niah_multivalue all the values do. ``read_twice``: Just-Read-Twice prompting (Arora et al., 2024): the
    text (with its needles) is given twice before the question, so a recurrent layer reads it a second time
    knowing all of it; the prompt is then about twice ``length``, the same needles at the same depths of each
    copy."""
    label, low, high = bucket
    rng = random.Random(f"recall-{seed}-{task}-{length}-{label}-{index}")
    if task not in RECALL_TASKS:
        raise ValueError(f"unknown recall task {task!r}: choose from {', '.join(RECALL_TASKS)}")
    kind = (
        "passkey"
        if task == "passkey"
        else (kind or (VALUE_KINDS[index % len(VALUE_KINDS)] if task == "niah_single" else "number"))
    )
    count = NEEDLES if task in ("niah_multikey", "niah_multivalue") else 1
    # The text around the needles is sized with placeholder values of the drawn kind's length.
    keys = [f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}" for _ in range(count)]
    draft_values = [_value(random.Random(0), kind)] * count
    intro, needles, question, max_new = _task_text(task, kind, keys, draft_values)
    size = lambda texts: sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)  # noqa: E731
    text, starts = haystack.cut(rng, max(count + 1, length - size([intro, question] + needles)) + 32)
    taken = set()
    keys = [
        keys[0]
        if task == "niah_multivalue"
        else _fresh(rng, lambda: f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}", text, taken)
        for _ in range(count)
    ]
    values = [_fresh(rng, lambda: _value(rng, kind), text, taken) for _ in range(count)]
    intro, needles, question, max_new = _task_text(task, kind, keys, values)
    # Sized again with the keys and values drawn: the haystack is cut to the tokens left over.
    budget = max(count + 1, length - size([intro, question] + needles) - 1)
    if budget < len(starts):
        text, starts = text[: starts[budget]], starts[:budget]
    places = [_insert_at(text, starts, low, high, rng)]  # the asked needle (multivalue: every needle)
    for _ in needles[1:]:
        places.append(
            _insert_at(text, starts, low, high, rng)
            if task == "niah_multivalue"
            else _insert_at(text, starts, 0.0, 1.0, rng)
        )
    order = sorted(range(count), key=lambda j: (places[j][0], j))
    pieces, at = [], 0
    for j in order:
        offset = places[j][0]
        before = "" if offset == 0 or text[offset - 1] in " \n" else " "
        after = "" if offset < len(text) and text[offset] in " \n" else " "
        pieces += [text[at:offset], before + needles[j] + after]
        at = offset
    pieces.append(text[at:])
    body = "".join(pieces)
    prompt = intro + body + ("\n\nThe same text again:\n\n" + body if read_twice else "") + question
    depth = places[0][1] if task != "niah_multivalue" else sum(p[1] for p in places) / count
    return {
        "task": task,
        "kind": kind,
        "length": length,
        "bucket": label,
        "depth": depth,
        "prompt": prompt,
        "key": keys[0],
        "answers": values if task == "niah_multivalue" else values[:1],
        "distractors": values[1:] if task == "niah_multikey" else [],
        "needles": needles,
        "max_new_tokens": max_new,
        "read_twice": read_twice,
    }


def recall_samples(
    tokenizer, haystack, tasks=RECALL_TASKS, lengths=RECALL_LENGTHS, depths=3, prompts=20, seed=0, read_twice=False
):
    """Every prompt of the suite: ``prompts`` per task, length and depth bucket (``depths`` equal buckets);
    ``read_twice`` as ``recall_sample`` says."""
    if not isinstance(prompts, int) or prompts < 1:
        raise ValueError(f"prompts per cell must be a whole number >= 1, got {prompts!r}")
    return [
        recall_sample(tokenizer, haystack, task, length, bucket, i, seed, read_twice=read_twice)
        for task in tasks
        for length in lengths
        for bucket in depth_buckets(depths)
        for i in range(prompts)
    ]


def score_answer(sample, text):
    """The share of the sample's values that occur, whole, in the generated ``text`` (one value: 0 or 1)."""
    return sum(_occurs(text, v) for v in sample["answers"]) / len(sample["answers"])


def _summary(scores):
    return {"score": sum(scores) / len(scores), "n": len(scores)}


def score_recall(samples, generate, outputs=None):
    """``generate(prompt, max_new_tokens=N) -> text`` on every sample; returns {task: {length: {"score",
    "n", "by_depth": {bucket: {"score", "n"}}, and for niah_single "by_kind": {kind: {"score", "n"}}}}}
    (lengths as strings, as JSON keeps them). ``outputs``, a list, gets one record per prompt: what was
    asked, what came out and, for niah_multikey, the distractor values it gave instead (a wrong key
    matched, rather than a value misread)."""
    cells = {}
    for sample in samples:
        text = generate(sample["prompt"], max_new_tokens=sample["max_new_tokens"])
        s = score_answer(sample, text)
        if outputs is not None:
            outputs.append(
                {
                    **{k: sample[k] for k in ("task", "length", "bucket", "kind", "key", "answers")},
                    "depth": round(sample["depth"], 4),
                    "output": text,
                    "score": s,
                    "distractors_given": [v for v in sample.get("distractors", []) if _occurs(text, v)],
                }
            )
        cell = cells.setdefault(sample["task"], {}).setdefault(
            str(sample["length"]), {"all": [], "depth": {}, "kind": {}}
        )
        cell["all"].append(s)
        cell["depth"].setdefault(sample["bucket"], []).append(s)
        cell["kind"].setdefault(sample["kind"], []).append(s)
    out = {}
    for task, by_length in cells.items():
        for length, cell in by_length.items():
            row = {**_summary(cell["all"]), "by_depth": {b: _summary(v) for b, v in cell["depth"].items()}}
            if task == "niah_single":
                row["by_kind"] = {k: _summary(v) for k, v in cell["kind"].items()}
            out.setdefault(task, {})[length] = row
    return out


def text_recall(
    model,
    tokenizer,
    haystack=RECALL_HAYSTACK,
    tasks=RECALL_TASKS,
    lengths=RECALL_LENGTHS,
    depths=3,
    prompts=20,
    seed=0,
    generate=None,
    documents=None,
    read_twice=False,
):
    """The recall suite on one model: ``score_recall`` over ``recall_samples``, with what was measured.
    Haystacks come from the data specs ``haystack``, or from ``documents`` (strings) where given;
    ``generate`` replaces the model's greedy decoding (a scripted model in tests); ``read_twice`` gives each
    prompt's text twice (Just-Read-Twice prompting; see ``recall_sample``)."""
    docs = list(documents) if documents is not None else haystack_documents(haystack)
    samples = recall_samples(tokenizer, Haystack(tokenizer, docs), tasks, lengths, depths, prompts, seed, read_twice)
    outputs = []
    scores = score_recall(samples, generate or hf_generate(model, tokenizer), outputs)
    return {
        "haystack": f"{len(docs)} given documents" if documents is not None else [str(h) for h in haystack],
        "tasks": list(tasks),
        "lengths": list(lengths),
        "depth_buckets": [b[0] for b in depth_buckets(depths)],
        "prompts_per_cell": prompts,
        "read_twice": read_twice,
        "seed": seed,
        "scores": scores,
        "outputs": outputs,
    }
