"""Recall tasks where recurrent models are known to fail, generated locally and deterministically.

- Passkey retrieval (as in Mohtashami & Jaggi's landmark attention and "Stuffed Mamba"): a five-digit
  key hidden at a chosen depth in filler text of a chosen length; the model must generate it.
- Multi-query associative recall (MQAR; Arora et al., Zoology): key-value pairs, then the keys again
  in another order; scored teacher-forced: every token of each recalled value must be the argmax.

Each scorer takes a plain callable, so it is tested with scripted "models" that answer right or wrong.
"""

import random
import re

import torch

FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")


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
            prompt = ("There is a pass key hidden in this text. Find it and remember it. "
                      + FILLER * cut + needle + FILLER * (repeats - cut)
                      + "What is the pass key? The pass key is")
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
    words = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "candle", "forest", "rocket", "silver",
             "garden", "window", "bridge", "marble", "violet", "anchor", "falcon", "meadow", "harbor", "copper",
             "saddle", "lantern", "pepper", "glacier", "walnut", "canyon", "orchid", "beacon", "thunder", "velvet",
             "compass"]
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
    """A ``generate`` callable for score_passkey: greedy decoding with the model's cache."""

    @torch.no_grad()
    def generate(prompt):
        enc = tokenizer(prompt, return_tensors="pt").to(model.device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    return generate


def hf_predict(model):
    """A ``predict`` callable for score_mqar: one forward pass, argmax at every position."""

    @torch.no_grad()
    def predict(ids):
        return model(ids[None].to(model.device)).logits[0].argmax(-1).cpu()

    return predict


def recall_suite(model, tokenizer, passkey_lengths=(256, 512, 1024), mqar_pairs=(8, 16), seed=0):
    """Passkey accuracy per context length and MQAR accuracy per number of pairs."""
    gen, pred = hf_generate(model, tokenizer), hf_predict(model)
    return {
        "passkey": {str(n): score_passkey(passkey_samples(tokenizer, n, seed=seed), gen) for n in passkey_lengths},
        "mqar": {str(n): score_mqar(mqar_samples(tokenizer, n, seed=seed), pred) for n in mqar_pairs},
    }
