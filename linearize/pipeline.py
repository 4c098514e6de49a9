"""The main job: convert -> attention transfer -> KD -> quality of teacher and student -> save. It lives in
the face because it joins the parts (convert, distill, evals).

Quality is measured as ../QUALITY.md asks: the training corpus's held-out split at the training length
(in domain), then out-of-domain corpora at the training length and at 8x it (at least 2048 tokens), per
position bucket, and passkey and MQAR recall; teacher and student on the same windows in the same run.
"""

from linearize.distill.recipe import distill, stage_config
from linearize.errors import SettingError

OOD_CORPORA = ("corpus:gnu-manuals", "corpus:c-code")
# The main job's default recipe, chosen by benchmarks/length_ablation.py (benchmarks/smollm2/length.md, then
# benchmarks/smollm2/recall-cpu/ for recall in ordinary text): LoLCATs layers with a learned decay (spans 8-64 tokens
# at init) and 4 attention sinks, and softmax attention kept in the 12 layers whose lone conversion costs the most KL
# at the answers of retrieval probes that also state three distractor facts (12 of SmolLM2's 30; the same share of
# other bases' layers; recall-grid/README.md: multi-key NIAH 0.63x -> 1.07x the teacher's); after training, LoLA's
# sparse cache of 256 keys per key/value head in the converted layers, chosen by the attention they received per
# query that saw them (benchmarks/smollm2/recall-cpu/sparse-cache.md, recall-grid/README.md). Applied when the
# target is lolcats and a setting is not given.
MAIN_RECIPE = {"rank_by": "kl-multikey", "decay": 64, "sinks": 4, "sparse_cache": 256}
KEEP_SHARE = 12 / 30


def recipe_keep_attention(num_layers, share=KEEP_SHARE):
    """A recipe's plan for a base of ``num_layers`` layers: auto:N with N = ``share`` of them (at least one)."""
    return f"auto:{max(1, round(share * num_layers))}"


# Recall in the main job: passkey and single-key NIAH in ordinary text (the out-of-domain corpora) at
# ``passkey_lengths``, 20 seeded prompts per task and length (needle depths spread over the whole text),
# and MQAR. `linearize eval --suite recall` measures the full grid (more tasks, depth buckets, lengths).
RECALL = {
    "passkey_lengths": (2048,),
    "mqar_pairs": (8, 16),
    "tasks": ("passkey", "niah_single"),
    "depths": 1,
    "prompts": 20,
}


def eval_lengths(seq_len):
    """The training length and 8x it, at least 2048 tokens."""
    return (seq_len, max(8 * seq_len, 2048))


def quality(
    teacher,
    student,
    tokenizer,
    seq_len,
    data=None,
    corpora=OOD_CORPORA,
    lengths=None,
    eval_tokens=8192,
    passkey_lengths=RECALL["passkey_lengths"],
    mqar_pairs=RECALL["mqar_pairs"],
    log=print,
):
    """In-domain held-out perplexity at ``seq_len``, out-of-domain perplexity by length and position on
    each corpus, and recall, for teacher and student. Returns the dict the checkpoint records."""
    from linearize.evals.perplexity import heldout_ids, length_quality, perplexity
    from linearize.evals.recall import recall_suite, text_recall

    # The windows `linearize eval CKPT --seq-len seq_len --max-tokens eval_tokens` measures: the same number.
    held = heldout_ids(tokenizer, data, seq_len, eval_tokens)
    ind = {"teacher": perplexity(teacher, held)["perplexity"], "student": perplexity(student, held)["perplexity"]}
    out = {
        "in_domain": {
            **ind,
            "ratio": ind["student"] / ind["teacher"],
            "seq_len": seq_len,
            "data": str(data or "default"),
        }
    }
    lengths = tuple(lengths or eval_lengths(seq_len))
    out["out_of_domain"] = {}
    for spec in corpora:
        log(f"      {spec}: perplexity over {', '.join(map(str, lengths))}-token windows")
        out["out_of_domain"][spec] = length_quality(
            teacher, student, tokenizer, spec, seq_lens=lengths, max_tokens=eval_tokens, split="all"
        )
    if passkey_lengths or mqar_pairs:
        log(
            f"      recall: {', '.join(RECALL['tasks'])} in ordinary text at {', '.join(map(str, passkey_lengths))} "
            f"tokens ({RECALL['prompts']} prompts each), MQAR with {', '.join(map(str, mqar_pairs))} pairs"
        )
        docs = _haystack(corpora, data) if passkey_lengths else None
        out["recall"] = {}
        for role, model in (("teacher", teacher), ("student", student)):
            r = {"mqar": recall_suite(model, tokenizer, (), mqar_pairs)["mqar"]}
            if passkey_lengths:
                grid = text_recall(
                    model,
                    tokenizer,
                    tasks=RECALL["tasks"],
                    lengths=passkey_lengths,
                    depths=RECALL["depths"],
                    prompts=RECALL["prompts"],
                    documents=docs,
                )
                grid["haystack"] = list(corpora) or f"{data or 'default'} (held-out documents)"
                r.update({task: {n: cell["score"] for n, cell in by.items()} for task, by in grid["scores"].items()})
                r["text_recall"] = grid
            out["recall"][role] = r
    return out


def _haystack(corpora, data):
    """Haystack documents for the recall tasks: the out-of-domain corpora, else the training data's held-out
    documents (never trained on either way)."""
    from linearize.data.packing import HELDOUT_FRACTION, SPLIT_SEED
    from linearize.data.texts import documents, split_documents

    if corpora:
        return [d for spec in corpora for d in documents(spec)]
    return split_documents(documents(data), HELDOUT_FRACTION, SPLIT_SEED)[1]


def summary_lines(q):
    """Human lines for the main job's output and the model card."""
    d = q["in_domain"]
    lines = [
        f"in-domain held-out ({d['seq_len']}-token windows): teacher {d['teacher']:.2f}, student "
        f"{d['student']:.2f} ({d['ratio']:.2f}x)"
    ]
    for spec, res in q.get("out_of_domain", {}).items():
        # Numeric order: a config reloaded from JSON has its keys sorted as strings.
        for n, w in sorted(res["windows"].items(), key=lambda item: int(item[0])):
            buckets = " / ".join(
                f"{label} {b['ratio']:.2f}"
                for label, b in sorted(w.get("by_position", {}).items(), key=lambda item: int(item[0].split("-")[0]))
            )
            lines.append(
                f"{spec}, {n}-token windows: teacher {w['teacher']:.2f}, student {w['student']:.2f} "
                f"({w['ratio']:.2f}x); by position {buckets}"
            )
    if "recall" in q:
        t, s = q["recall"]["teacher"], q["recall"]["student"]
        # Older checkpoints hold the passkey in a repeated filler sentence, without "text_recall".
        where = f" (in ordinary text, {s['text_recall']['prompts_per_cell']} prompts)" if "text_recall" in s else ""
        for task, name in (("passkey", "passkey"), ("niah_single", "single-key NIAH")):
            if s.get(task):
                lines.append(
                    f"{name} "
                    + ", ".join(
                        f"@{n}: teacher {t[task][n]:.2f}, student {s[task][n]:.2f}" for n in sorted(s[task], key=int)
                    )
                    + where
                )
        if s.get("mqar"):
            lines.append(
                "MQAR "
                + ", ".join(
                    f"{n} pairs: teacher {t['mqar'][n]:.2f}, student {s['mqar'][n]:.2f}"
                    for n in sorted(s["mqar"], key=int)
                )
            )
    if "cost" in q:
        c = q["cost"]
        lines.append(
            f"training: {c['train_tokens']:,} tokens in {c['train_seconds']:.0f}s; decode state at 4k tokens "
            f"{c['state_bytes_4k'] / 2**20:.1f} MiB vs {c['kv_bytes_4k'] / 2**20:.1f} MiB KV cache"
        )
    return lines


def main_job(
    base_spec,
    target,
    out,
    keep_attention=None,
    data=None,
    tokens=None,
    seq_len=None,
    batch_size=None,
    grad_accum=None,
    save_every=None,
    deepspeed=None,
    seed=None,
    resume=False,
    eval_tokens=8192,
    log=print,
    stage_overrides=None,
    convert_settings=None,
    eval_corpora=OOD_CORPORA,
    eval_lengths=None,
    passkey_lengths=RECALL["passkey_lengths"],
    mqar_pairs=RECALL["mqar_pairs"],
    save_minutes=None,
    dtype="auto",
    export=None,
    transfer_mode=None,
    recipe=None,
):
    """convert -> transfer -> kd -> quality of teacher and student -> save to ``out``.
    ``tokens`` is the budget of both stages (55% transfer, 45% kd); default: this machine's defaults.
    ``stage_overrides`` ({"transfer": {...}, "kd": {...}}; ``{"skip": True}`` leaves a stage out) and
    ``convert_settings`` let recipes set the rest (learning rates, LoRA rank, feature dims, calibration).
    ``eval_corpora`` (data specs), ``eval_lengths``, ``passkey_lengths`` and ``mqar_pairs`` set the
    quality measurement (see ``quality``); it is saved as ``config.linearize["heldout_perplexity"]``.
    ``dtype`` is the run's (``--dtype``): teacher and student load, train and are measured in it (auto:
    bfloat16 on CUDA, float32 on CPU; trained parameters are held in fp32, see ``distill.precision``), and
    the checkpoint is saved in it. ``export="native"`` also writes ``<out>-native``, the result as the
    architecture transformers ships (``convert.export_native``); a target/base with none is refused right
    after conversion, before any training. ``transfer_mode`` is the transfer stage's form ("streamed" or
    "whole"; default: streamed on CUDA, whole on CPU, see ``distill.recipe``). ``recipe``: the preset the command
    took (``linearize.recipes``, as ``Recipe.record`` gives it), recorded as ``config.linearize["recipe"]``.

    Work in progress lives in ``<out>.work``: each stage's checkpoints (``save_every`` steps, default a
    tenth of the stage, and ``save_minutes``, default 30) and, once a stage finishes, its student in
    ``<out>.work/results/<stage>``. With ``resume`` a finished stage is not rerun (its saved student is
    loaded, and the conversion is not redone), an unfinished one continues from its newest checkpoint,
    and the log says which; without it, ``<out>.work`` is cleared first."""
    import json
    import shutil
    import time
    from pathlib import Path

    from linearize.convert.bases import load_base, load_tokenizer, resolve_dtype
    from linearize.convert.convert import convert, set_sparse_cache, sparse_cache_layers
    from linearize.convert.save import save_atomic

    dtype = resolve_dtype(dtype)
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 2):
        raise SettingError(f"bad --tokens {tokens!r}: a whole number >= 2 (both stages share it)")
    common = dict(
        seq_len=seq_len,
        batch_size=batch_size,
        grad_accum=grad_accum,
        save_every=save_every,
        save_minutes=save_minutes,
        deepspeed=deepspeed,
        seed=seed,
        transfer_mode=transfer_mode,
    )
    budgets = (
        {"transfer": None, "kd": None}
        if tokens is None
        else {"transfer": int(tokens * 0.55), "kd": tokens - int(tokens * 0.55)}
    )
    for stage in ("transfer", "kd"):  # degenerate settings fail now, before a model loads or a work folder goes
        settings = {k: v for k, v in (stage_overrides or {}).get(stage, {}).items() if k != "skip"}
        stage_config(stage, **{**common, "tokens": budgets[stage], **settings})
    t0 = time.time()
    work = Path(f"{out}.work")
    stages = ((2, "transfer"), (3, "kd"))
    finished = {}  # stage -> its saved result, for stages an earlier run finished
    if resume and not work.exists():
        log(f"resume: nothing to resume from ({work} does not exist); starting fresh")
        resume = False
    elif resume:
        finished = {
            stage: work / "results" / stage
            for _, stage in stages
            if (work / "results" / stage / "summary.json").exists()
        }
    elif work.exists():
        shutil.rmtree(work)
    for spec in eval_corpora or ():
        if str(spec).startswith("corpus:"):
            # Fetch (or fail) now: a corpus that cannot be had must not cost a finished training run.
            from linearize.data.corpora import corpus_path

            corpus_path(str(spec)[len("corpus:") :])
    # LoLA's sparse cache is training-free: the student trains without it and takes it before it is measured.
    settings = dict(convert_settings or {})
    sparse_cache = settings.pop("sparse_cache", None) or None  # 0: none
    sparse_select = settings.pop("sparse_select", None)
    if sparse_select and sparse_cache is None:
        raise SettingError("--sparse-select chooses the keys of a sparse cache: give --sparse-cache N too")
    tokenizer = load_tokenizer(base_spec)
    teacher = load_base(base_spec, dtype=dtype)
    latest = [stage for _, stage in stages if stage in finished][-1:]  # the last finished stage's student goes on
    if latest:
        from linearize.convert.auto import LinearizedForCausalLM

        log(
            f"[1/5] loading {base_spec!r} in {str(dtype).removeprefix('torch.')}; the {target} conversion is in "
            f"the {latest[0]} stage's saved result"
        )
        student = LinearizedForCausalLM.from_pretrained(finished[latest[0]], dtype=teacher.dtype).eval()
    else:
        log(f"[1/5] loading {base_spec!r} in {str(dtype).removeprefix('torch.')} and converting to {target}")
        student = convert(
            teacher,
            target,
            keep_attention=keep_attention,
            base_name=str(base_spec),
            tokenizer=tokenizer,
            **settings,
        )
    if sparse_cache is not None:
        sparse_cache_layers(student, sparse_cache)  # refused now, before any training
    if export == "native":
        from linearize.convert.export_native import check_exportable

        check_exportable(student.config)  # before any training
    summaries, trained_here, earlier_seconds = {}, False, 0.0
    for n, stage in stages:
        overrides = dict((stage_overrides or {}).get(stage, {}))
        if stage in finished:
            summaries[stage] = json.loads((finished[stage] / "summary.json").read_text())
            earlier_seconds += summaries[stage]["seconds"]
            loaded = f"; its student loaded from {finished[stage]}" if stage == latest[0] else f" ({finished[stage]})"
            log(f"[{n}/5] {stage}: finished in an earlier run, not rerun{loaded}")
            continue
        if overrides.pop("skip", False) or (stage == "transfer" and not student.mixers()):
            log(f"[{n}/5] {stage}: skipped")
            continue
        if stage == "transfer" and not any(m.new_parameter_names() for m in student.mixers().values()):
            log(f"[{n}/5] {stage}: skipped ({target} adds no parameters)")
            continue
        log(f"[{n}/5] {stage}")
        summary = distill(
            student,
            teacher,
            tokenizer,
            out,
            stage=stage,
            data=data,
            resume=resume,
            save=False,
            log=log,
            **{**common, "tokens": budgets[stage], **overrides},
        )
        student, trained_here = summary.pop("model"), True
        summaries[stage] = summary
        # The finished stage's student, so that a resumed run loads it instead of training the stage again.
        (work / "results").mkdir(parents=True, exist_ok=True)
        (work / "results" / f".{stage}-summary.json").write_text(json.dumps(summary))
        save_atomic(
            student, None, work / "results" / stage, extra={"summary.json": work / "results" / f".{stage}-summary.json"}
        )
        log(
            f"      {summary['steps']} steps, {summary['tokens']:,} tokens in {summary['seconds']:.0f}s "
            f"({summary['tokens_per_s']:.0f} tok/s), loss {summary['first_loss']:.4g} -> {summary['last_loss']:.4g}"
        )
    train_seconds = time.time() - t0 + earlier_seconds
    if latest and not trained_here:  # where training would have put them
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        teacher.to(device)
        student.to(device)
    if sparse_cache is not None:
        set_sparse_cache(student, sparse_cache, sparse_select)
        layers = sparse_cache_layers(student, sparse_cache)
        how = next(iter(layers.values())).sparse_select
        n = len(layers)
        log(f"      LoLA's sparse cache: {sparse_cache} keys per key/value head in {n} converted layers, by {how}")
    log("[4/5] quality of teacher and student")
    cfg_seq = stage_config("kd", seq_len=seq_len).seq_len
    q = quality(
        teacher,
        student,
        tokenizer,
        cfg_seq,
        data=data,
        corpora=eval_corpora or (),
        lengths=eval_lengths,
        eval_tokens=eval_tokens,
        passkey_lengths=passkey_lengths or (),
        mqar_pairs=mqar_pairs or (),
        log=log,
    )
    state, kv = student.cache_bytes(4096)
    q["cost"] = {
        "train_tokens": sum(s["tokens"] for s in summaries.values()),
        "train_seconds": round(train_seconds, 1),
        "state_bytes_4k": state,
        "kv_bytes_4k": kv,
    }
    student.config.linearize = {
        **student.config.linearize,
        "heldout_perplexity": q,
        **({"recipe": recipe} if recipe else {}),
    }
    log(f"[5/5] saving to {out}")
    # The stages' training logs and checkpoints go with the checkpoint; their saved students are dropped.
    save_atomic(student, tokenizer, out, extra={f"training/{stage}": work / stage for _, stage in stages})
    shutil.rmtree(work, ignore_errors=True)
    result = {"perplexity": q["in_domain"], "quality": q, "stages": summaries, "out": str(out)}
    if export == "native":
        from linearize.convert.export_native import export_native

        result["native"] = str(export_native(out, f"{out}-native", tokenizer=tokenizer))
        log(f"      exported natively to {result['native']}")
    return result
