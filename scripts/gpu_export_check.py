"""GPU check for native export (run on a CUDA machine): the embedded SmolLM2 converted to a Mamba hybrid (softmax
kept every 4th layer), exported as transformers' own GraniteMoeHybrid, loaded with plain
``AutoModelForCausalLM.from_pretrained`` (no remote code) and run in bf16 on CUDA through transformers'
GraniteMoeHybrid path: the same first 32 greedy tokens as our model in bf16, and the decode tokens/s of both.
Also prints, for diagnosis, both sides' logits against the same weights in fp32 along fp32's greedy path: a
split between two bf16 runs that are each as far from fp32 is rounding, one far from fp32 alone is a bug.
Prints one line per check and exits 1 on failure.

    python scripts/gpu_export_check.py                  # needs CUDA; our side uses fla when installed
    python scripts/gpu_export_check.py --model DIR      # a converted (e.g. distilled) mamba checkpoint instead
    python scripts/gpu_export_check.py --cpu            # dry run on CPU in fp32, 8 tokens
    python scripts/gpu_export_check.py --cpu --dtype bfloat16 --tokens 16 --bench 16
"""

import argparse
import importlib.util
import sys
import tempfile
import time

import torch

PROMPT = "The capital of France is"
failures = []


def check(name, ok, detail):
    if not ok:
        failures.append(name)
    print(f"{name:<58} {detail}  {'OK' if ok else 'FAIL'}", flush=True)


def greedy(model, inputs, n):
    """n greedy tokens (EOS does not stop it early, so both sides produce n), with each step's raw logits."""
    out = model.generate(
        **inputs,
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=model.generation_config.eos_token_id,
    )
    return out.sequences[0, inputs["input_ids"].shape[1] :].tolist(), torch.stack(out.logits, 1)[0].float()


def decode_rate(model, inputs, n, sync):
    """Decode tokens/s: (n - 1) extra tokens over the time generate(n) takes beyond generate(1) (the prefill and
    first token), best of three after a warm-up."""

    def timed(k):
        sync()
        t = time.perf_counter()
        model.generate(
            **inputs,
            max_new_tokens=k,
            min_new_tokens=k,
            do_sample=False,
            pad_token_id=model.generation_config.eos_token_id,
        )
        sync()
        return time.perf_counter() - t

    timed(n)  # warm-up: kernels compile / autotune, caches allocate
    prefill = min(timed(1) for _ in range(3))
    full = min(timed(n) for _ in range(3))
    return (n - 1) / max(full - prefill, 1e-9)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="dry run on CPU (default fp32, 8 tokens)")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], help="default bfloat16 on CUDA, float32 with --cpu")
    ap.add_argument("--tokens", type=int, help="greedy tokens compared (default 32, 8 with --cpu)")
    ap.add_argument("--bench", type=int, help="tokens per timed decode (default 128, 8 with --cpu)")
    ap.add_argument("--model", help="a converted mamba checkpoint folder (default: SmolLM2 converted at step 0)")
    args = ap.parse_args()
    dev = "cpu" if args.cpu else "cuda"
    dtype = getattr(torch, args.dtype or ("float32" if args.cpu else "bfloat16"))
    n = args.tokens or (8 if args.cpu else 32)
    bench = args.bench or (8 if args.cpu else 128)

    import transformers
    from transformers import AutoModelForCausalLM

    from linearize.convert.bases import load_base, load_tokenizer
    from linearize.convert.convert import convert
    from linearize.convert.export_native import export_native

    if dev == "cuda":
        if not torch.cuda.is_available():
            sys.exit("gpu_export_check: no CUDA device (run with --cpu for a dry run of the script)")
        name = torch.cuda.get_device_name()
    else:
        name = "CPU (dry run)"
    have = {p: importlib.util.find_spec(p) is not None for p in ("fla", "mamba_ssm", "causal_conv1d")}
    print(
        f"device {name}, {str(dtype)[6:]}, torch {torch.__version__}, transformers {transformers.__version__}; "
        f"ours on {'fla' if have['fla'] and dev == 'cuda' else 'torch forms'}, GraniteMoeHybrid on "
        f"{'mamba_ssm' if have['mamba_ssm'] else 'its torch fallback'} (scan) and "
        f"{'causal_conv1d' if have['causal_conv1d'] else 'its torch fallback'} (conv)",
        flush=True,
    )
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    if args.model:  # a converted (e.g. distilled) checkpoint folder instead of the step-0 conversion
        from linearize.convert.auto import LinearizedForCausalLM

        tokenizer = load_tokenizer(args.model)
        model = LinearizedForCausalLM.from_pretrained(args.model, dtype=dtype)
    else:
        # Converted in the run's dtype (as `linearize convert --dtype` does: rotary frequencies stay fp32, as
        # from_pretrained keeps the host's), so both sides hold the same weights.
        tokenizer = load_tokenizer("llama")
        torch.manual_seed(0)  # the conversion of tests/convert/test_export_native.py's SmolLM2 check
        model = convert(load_base("llama", dtype=dtype), "mamba", keep_attention="every:4")
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_native(model, f"{tmp}/granite", tokenizer=tokenizer)
        host = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(dev).eval()  # no remote code
        # The reference: the same weights in fp32 (for telling rounding apart from a mapping error below).
        ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(dev).eval()
    model = model.to(dev).eval()
    check(
        "export loads as transformers' own GraniteMoeHybrid",
        type(host).__name__ == "GraniteMoeHybridForCausalLM"
        and type(host).__module__.startswith("transformers.models.granitemoehybrid"),
        f"{type(host).__module__}.{type(host).__name__}",
    )

    inputs = tokenizer(PROMPT, return_tensors="pt").to(dev)
    start = inputs["input_ids"].shape[1]
    with torch.no_grad():
        ours, ours_logits = greedy(model, inputs, n)
        theirs, _ = greedy(host, inputs, n)
        same = ours == theirs
        detail = f"ours {ours}" if same else f"ours {ours} host {theirs}"
        if not same:  # a near tie explains a split; a wide margin points at a mapping error
            i = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
            top = ours_logits[i].topk(2).values
            detail += f"; first split at token {i}, our top-2 margin there {(top[0] - top[1]).item():.3g}"
        check(f"same first {n} greedy tokens ({str(dtype)[6:]}, {dev})", same, detail)
        print(f"text: {tokenizer.decode(theirs)!r}", flush=True)
        # Diagnosis: both sides against fp32 along fp32's own greedy path (one forward each, no divergence).
        ref_tokens, _ = greedy(ref, inputs, n)
        path = torch.cat([inputs["input_ids"], torch.tensor([ref_tokens], device=dev)], 1)[:, :-1]
        logits = {
            name: m(path, use_cache=False).logits[0, start - 1 :].float()
            for name, m in (("ours", model), ("host", host), ("fp32", ref))
        }
        diff = {k: (logits[k] - logits["fp32"]).abs().max().item() for k in ("ours", "host")}
        agree = {k: sum(a == b for a, b in zip(t, ref_tokens)) for k, t in (("ours", ours), ("host", theirs))}
        print(
            f"{'max abs logit diff on fp32 greedy path vs fp32':<58} ours {diff['ours']:.3g}, host "
            f"{diff['host']:.3g}, ours vs host {(logits['ours'] - logits['host']).abs().max().item():.3g} "
            f"(|logits| up to {logits['fp32'].abs().max().item():.3g})",
            flush=True,
        )
        print(
            f"{'greedy tokens equal to fp32 greedy (same position)':<58} ours {agree['ours']}/{n}, "
            f"host {agree['host']}/{n}",
            flush=True,
        )
        ours_rate = decode_rate(model, inputs, bench, sync)
        their_rate = decode_rate(host, inputs, bench, sync)
    print(
        f"{f'decode tokens/s ({bench} tokens, batch 1, {str(dtype)[6:]}, {dev})':<58} ours {ours_rate:.1f}, "
        f"GraniteMoeHybrid {their_rate:.1f}",
        flush=True,
    )
    print(f"{len(failures)} failed" if failures else "all export checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
