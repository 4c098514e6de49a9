"""The main job: convert -> attention transfer -> KD -> held-out perplexity of teacher and student ->
save. It lives in the face because it joins the parts (convert, distill, evals)."""

from linearize.distill.recipe import distill, stage_config


def main_job(base_spec, target, out, keep_attention=None, data=None, tokens=None, seq_len=None, batch_size=None,
             grad_accum=None, save_every=None, deepspeed=None, seed=None, resume=False, eval_tokens=8192, log=print,
             stage_overrides=None, convert_settings=None):
    """convert -> transfer -> kd -> held-out perplexity of teacher and student -> save to ``out``.
    ``tokens`` is the budget of both stages (55% transfer, 45% kd); default: this machine's defaults.
    ``stage_overrides`` ({"transfer": {...}, "kd": {...}}; ``{"skip": True}`` leaves a stage out) and
    ``convert_settings`` let recipes set the rest (learning rates, LoRA rank, feature dims, calibration)."""
    from linearize.convert.bases import load_base, load_tokenizer
    from linearize.convert.convert import convert
    from linearize.convert.save import save_atomic
    from linearize.distill.data import build_blocks
    from linearize.evals.perplexity import perplexity

    tokenizer = load_tokenizer(base_spec)
    log(f"[1/5] loading {base_spec!r} and converting to {target}")
    teacher = load_base(base_spec)
    student = convert(teacher, target, keep_attention=keep_attention, base_name=str(base_spec), tokenizer=tokenizer,
                      **(convert_settings or {}))
    common = dict(seq_len=seq_len, batch_size=batch_size, grad_accum=grad_accum, save_every=save_every,
                  deepspeed=deepspeed, seed=seed)
    budgets = {"transfer": None, "kd": None} if tokens is None else {"transfer": int(tokens * 0.55),
                                                                     "kd": tokens - int(tokens * 0.55)}
    summaries = {}
    for n, stage in ((2, "transfer"), (3, "kd")):
        overrides = dict((stage_overrides or {}).get(stage, {}))
        if overrides.pop("skip", False) or (stage == "transfer" and not student.mixers()):
            log(f"[{n}/5] {stage}: skipped")
            continue
        if stage == "transfer" and not any(m.new_parameter_names() for m in student.mixers().values()):
            log(f"[{n}/5] {stage}: skipped ({target} adds no parameters)")
            continue
        log(f"[{n}/5] {stage}")
        summary = distill(student, teacher, tokenizer, out, stage=stage, data=data, resume=resume, save=False,
                          **{**common, "tokens": budgets[stage], **overrides})
        student = summary.pop("model")
        summaries[stage] = summary
        log(f"      {summary['steps']} steps, {summary['tokens']:,} tokens in {summary['seconds']:.0f}s "
            f"({summary['tokens_per_s']:.0f} tok/s), loss {summary['first_loss']:.4g} -> {summary['last_loss']:.4g}")
    log("[4/5] held-out perplexity")
    cfg_seq = stage_config("kd", seq_len=seq_len).seq_len
    _, held = build_blocks(data, tokenizer, cfg_seq, 0.05, seed or 0)
    held = held[: max(1, eval_tokens // cfg_seq)]
    ppl = {"teacher": perplexity(teacher, held)["perplexity"], "student": perplexity(student, held)["perplexity"]}
    ppl["ratio"] = ppl["student"] / ppl["teacher"]
    student.config.linearize = {**student.config.linearize, "heldout_perplexity": ppl}
    log(f"[5/5] saving to {out}")
    from pathlib import Path

    work = Path(f"{out}.work")
    save_atomic(student, tokenizer, out, extra={"training": work})
    return {"perplexity": ppl, "stages": summaries, "out": str(out)}
