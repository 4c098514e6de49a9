"""Exports run in llama.cpp, checked token for token and timed against the teacher (issue #25).

What a user does, end to end, on CPU: llama-cpp-python's source distribution from pip (it vendors llama.cpp and
llama.cpp's own ``convert_hf_to_gguf.py``), built once and cached outside the repository; the embedded SmolLM2
converted to Mamba hybrids with ``linearize convert`` and written as GraniteMoeHybrid with ``linearize export``;
each folder (and the plain teacher, the calibration) converted to GGUF f32 and q8_0 by llama.cpp's converter; then,
in llama.cpp, the prompt's last-position logits and 32 greedy tokens against transformers' (the same folder) and
linearize's (the converted checkpoint). ``--speed`` adds prefill tokens/s and decode ms/token at each context,
student against teacher in one run. A gdn hybrid on a Qwen3-shaped random base goes the same way through Qwen3-Next,
or reports the line llama.cpp refuses it with.

    python benchmarks/llama_cpp_check.py --speed --out benchmarks/llama-cpp.md

llama.cpp runs in child processes (``--worker``): its failed assertions abort the process, and the parent reports the
line. The build: ``pip install --no-deps --target CACHE/site`` of the sdist (CMake, CPU, ``-DLLAVA_BUILD=OFF``), in
``$LINEARIZE_CACHE/llama-cpp/VERSION`` (default ``~/.cache/linearize/llama-cpp/VERSION``), with the sdist unpacked
beside it for the converter; ``--build-only`` stops there.
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

VERSION = "0.3.36"
PROMPT = (
    "The city council met on Tuesday to discuss the new library. After a long debate about its cost, the members "
    "agreed that the building would open next spring, and that"
)
GENERATE = 32
CONTEXTS = "512,4096,16384"
HERE = Path(__file__).resolve().parent


def cache_root(version):
    from linearize.data.cache import cache_dir

    return cache_dir() / "llama-cpp" / version


def run(cmd, **kw):
    """Run ``cmd``; on failure raise with its last lines."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{tail}")
    return proc


def ensure_build(version=VERSION, jobs=2):
    """(root, converter script, seconds the build took): the sdist from pip, unpacked (for the converter) and
    installed into root/site, once."""
    root = cache_root(version)
    site, src = root / "site", root / "src"
    stamp = root / "BUILD.json"
    if stamp.exists() and (site / "llama_cpp" / "lib" / "libllama.so").exists() and src.is_dir():
        return root, src / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py", json.loads(stamp.read_text())["seconds"]
    root.mkdir(parents=True, exist_ok=True)
    sdist_dir = root / "sdist"
    run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
         f"llama-cpp-python=={version}", "-d", str(sdist_dir)])  # fmt: skip
    sdist = next(sdist_dir.glob(f"llama_cpp_python-{version}.tar.gz"))
    if not src.is_dir():
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".src."))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        os.replace(tmp / f"llama_cpp_python-{version}", src)
        shutil.rmtree(tmp)
    env = {**os.environ, "CMAKE_ARGS": "-DLLAVA_BUILD=OFF", "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs)}
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".site."))
    start = time.time()
    print(f"building llama-cpp-python {version} from its sdist on CPU ({jobs} jobs; minutes)...", flush=True)
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--target", str(tmp), str(sdist)],
        env=env)  # fmt: skip
    seconds = time.time() - start
    # llama_cpp imports diskcache (its prompt cache) at import time, llama.cpp's Llama converter sentencepiece (even for
    # a tokenizer.json); numpy, jinja2, typing-extensions, torch and transformers are linearize's own.
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(tmp), "diskcache", "sentencepiece"])
    if site.exists():
        shutil.rmtree(site)
    os.replace(tmp, site)
    info = {"version": version, "seconds": round(seconds), "jobs": jobs, "cmake_args": env["CMAKE_ARGS"],
            "machine": platform.machine(), "cpus": os.cpu_count()}  # fmt: skip
    stamp.write_text(json.dumps(info, indent=2) + "\n")
    return root, src / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py", info["seconds"]


def linearize(*args):
    """The CLI as a user types it (this interpreter's linearize)."""
    return run([sys.executable, "-m", "linearize.cli", *map(str, args)], env={**os.environ, "HF_HUB_OFFLINE": "1"})


def to_gguf(converter, folder, out, outtype):
    """llama.cpp's own converter; (path, None) or (None, the line it refused with)."""
    if out.exists():
        return out, None
    tmp = out.with_name(f".{out.name}")
    site = converter.parents[3] / "site"  # where the build put sentencepiece
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    # Qwen3-Next's converter expects a multi-token-prediction head unless told there is none.
    extra = ["--no-mtp"] if json.loads((folder / "config.json").read_text())["model_type"] == "qwen3_next" else []
    proc = subprocess.run([sys.executable, str(converter), str(folder), "--outfile", str(tmp), "--outtype", outtype,
                           *extra],
                          capture_output=True, text=True, env=env)  # fmt: skip
    if proc.returncode:
        return None, refusal(proc.stdout + proc.stderr)
    os.replace(tmp, out)
    return out, None


def refusal(log):
    """The line that says why: an error, an assertion, an exception's message."""
    lines = [line.strip() for line in log.strip().splitlines() if line.strip()]
    for pattern in (r"GGML_ASSERT|error loading model|llama_model_load: error", r"Error|error|Exception|exception"):
        hits = [line for line in lines if re.search(pattern, line)]
        if hits:
            return hits[-1][:300]
    return (lines[-1] if lines else "no output")[:300]


# ---------------------------------------------------------------------------------------------------------------------
# The llama.cpp side, in a child process.


def worker(task):
    sys.path.insert(0, task["site"])
    import numpy as np
    from llama_cpp import Llama

    threads = task["threads"]
    if task["kind"] == "agree":  # verbose, so that llama.cpp's line saying why it refuses a model reaches stderr
        kv = {"type_k": 0, "type_v": 0} if task.get("kv") == "f32" else {}  # GGML_TYPE_F32; llama.cpp's default f16
        llm = Llama(model_path=task["gguf"], n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads,
                    logits_all=True, verbose=True, **kv)  # fmt: skip
        prompt = task["prompt_ids"]
        tokenized = llm.tokenize(task["prompt"].encode(), add_bos=False, special=False)
        llm.eval(prompt)
        last = np.array(llm.scores[len(prompt) - 1], dtype=np.float32)
        greedy = []
        for _ in range(task["generate"]):  # greedy by hand: argmax of the logits, as transformers' generate
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            greedy.append(token)
            llm.eval([token])
        llm.reset()  # teacher forcing on the reference's continuation: logits at every position
        llm.eval(prompt + task["reference"])
        forced = np.array(llm.scores[len(prompt) - 1 : len(prompt) + len(task["reference"])], dtype=np.float32)
        np.save(task["logits_out"], np.concatenate([last[None], forced]))
        return {"tokenized": tokenized, "greedy": greedy}
    if task["kind"] == "speed":
        rng = np.random.default_rng(0)
        out = {}
        for context in task["contexts"]:
            llm = Llama(model_path=task["gguf"], n_ctx=context + task["decode"] + 8, n_batch=512, n_ubatch=512,
                        n_threads=threads, n_threads_batch=threads, verbose=False)  # fmt: skip
            ids = rng.integers(100, 40000, context + task["decode"]).tolist()
            start = time.perf_counter()
            llm.eval(ids[:context])
            prefill = time.perf_counter() - start
            steps = []
            for token in ids[context:]:
                start = time.perf_counter()
                llm.eval([token])
                steps.append(time.perf_counter() - start)
            steps.sort()
            out[context] = {"prefill_tok_s": context / prefill, "decode_ms": 1000 * steps[len(steps) // 2]}
            del llm
        return out
    raise ValueError(task["kind"])


def in_child(task, timeout=3600):
    """Run a worker task in a fresh interpreter: (result, None) or (None, the line llama.cpp stopped with)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(task, f)
    proc = subprocess.run([sys.executable, __file__, "--worker", f.name], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    os.unlink(f.name)
    if proc.returncode:
        return None, refusal(proc.stdout + proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1]), None


# ---------------------------------------------------------------------------------------------------------------------
# The transformers side.


def q8_0(weight):
    """``weight`` rounded as llama.cpp's q8_0 stores it: blocks of 32 along a row, int8 times an fp16 scale."""
    import torch

    x = weight.float().reshape(-1, 32)
    scale = (x.abs().amax(1, keepdim=True) / 127).half().float()
    q = torch.where(scale > 0, torch.round(x / torch.where(scale > 0, scale, 1)), 0)
    return (q * scale).reshape(weight.shape).to(weight.dtype)


def reference(folder, prompt_ids, ours=None):
    """transformers on ``folder`` (the file llama.cpp converted): 32 greedy tokens and the logits at the prompt's last
    position and along the continuation; with ``ours`` (a linearize checkpoint), linearize's logits on the same; and
    the logits with the matrices rounded as q8_0 stores them (what quantization alone does, engine aside)."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([prompt_ids])
    out = {}
    with torch.no_grad():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=GENERATE,
                                   do_sample=False, pad_token_id=model.config.eos_token_id)  # fmt: skip
        out["greedy"] = generated[0, ids.shape[1] :].tolist()
        full = torch.tensor([prompt_ids + out["greedy"]])
        out["logits"] = model(full, use_cache=False).logits[0, len(prompt_ids) - 1 :].float().numpy()
        if ours is not None:
            from linearize.convert.auto import LinearizedForCausalLM

            mine = LinearizedForCausalLM.from_pretrained(ours, dtype=torch.float32).eval()
            out["ours_logits"] = mine(full).logits[0, len(prompt_ids) - 1 :].float().numpy()
            out["ours_greedy"] = mine.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=GENERATE,
                                               do_sample=False)[0, ids.shape[1] :].tolist()  # fmt: skip
        for name, p in model.named_parameters():  # what llama.cpp's converter quantizes: matrices, rows of 32k
            if p.ndim == 2 and p.shape[-1] % 32 == 0:
                p.copy_(q8_0(p))
        out["q8_0_logits"] = model(full, use_cache=False).logits[0, len(prompt_ids) - 1 :].float().numpy()
    return out


def leading(a, b):
    """How many leading tokens agree."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def qwen3_gdn(work, converter):
    """gdn on a Qwen3-shaped random base with SmolLM2's tokenizer, exported as Qwen3-Next: (folder, None) or
    (None, why not)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from linearize.convert.bases import load_tokenizer

    base_dir, conv_dir, native = work / "qwen3-random", work / "qwen3-gdn", work / "qwen3-gdn-native"
    if not native.exists():
        tok = load_tokenizer("llama")
        # Qwen3-0.6B's shapes (head_dim 128, 16 query / 8 KV heads, q/k norms, hidden 1024), 4 layers, SmolLM2's
        # vocabulary; weights at 4x Qwen3's init scale so the logits are not all alike.
        config = AutoConfig.for_model(
            "qwen3", vocab_size=len(tok), hidden_size=1024, intermediate_size=3072, num_hidden_layers=4,
            num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
            rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.08,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )  # fmt: skip
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(base_dir)
        tok.save_pretrained(base_dir)
        linearize("convert", "--base", base_dir, "--to", "gdn", "--keep-attention", "every:2", "--out", conv_dir,
                  "--overwrite")  # fmt: skip
        linearize("export", conv_dir, "--out", native, "--overwrite")
    return native, conv_dir


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", default=VERSION, help="llama-cpp-python release (its sdist vendors llama.cpp)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel compile jobs for the one-time build")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--work", default=None, help="where exports and GGUFs go (default: CACHE/work)")
    ap.add_argument("--plans", default="every:4,auto:12", help="--keep-attention of each SmolLM2 mamba hybrid")
    ap.add_argument("--quants", default="f32,q8_0")
    ap.add_argument("--no-qwen3", action="store_true", help="skip the gdn / Qwen3-Next case")
    ap.add_argument("--speed", action="store_true", help="also time prefill and decode at --contexts")
    ap.add_argument("--contexts", default=CONTEXTS)
    ap.add_argument("--decode", type=int, default=32, help="decode steps timed per context (median reported)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--note", default="", help="a line the markdown carries (e.g. what else ran on the machine)")
    ap.add_argument("--out", default=None, help="markdown result (default: print only)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(Path(args.worker).read_text()))))
        return 0

    import numpy as np
    from transformers import AutoTokenizer

    from linearize.convert.bases import embedded_dir

    root, converter, build_seconds = ensure_build(args.version, args.jobs)
    print(f"llama-cpp-python {args.version} built in {build_seconds} s, cached in {root}")
    if args.build_only:
        return 0
    work = Path(args.work) if args.work else root / "work"
    work.mkdir(parents=True, exist_ok=True)
    quants = args.quants.split(",")

    # The models: the teacher as the folder it loads from, and each hybrid converted and exported by the CLI.
    models = {"teacher": (embedded_dir(), None)}
    for plan in filter(None, args.plans.split(",")):
        name = f"mamba-{plan.replace(':', '')}"
        conv, native = work / name, work / f"{name}-native"
        if not native.exists():
            print(f"linearize convert --base llama --to mamba --keep-attention {plan}; linearize export", flush=True)
            rank = ["--rank-by", "kl-recall"] if plan.startswith("auto:") else []
            linearize("convert", "--base", "llama", "--to", "mamba", "--keep-attention", plan, *rank, "--out", conv,
                      "--overwrite")  # fmt: skip
            linearize("export", conv, "--out", native, "--overwrite")
        models[name] = (native, conv)
    if not args.no_qwen3:
        models["qwen3-gdn"] = qwen3_gdn(work, converter)

    tok = AutoTokenizer.from_pretrained(models["teacher"][0])
    prompt_ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    rows, ggufs, refused = [], {}, {}
    for name, (folder, conv) in models.items():
        print(f"{name}: transformers reference", flush=True)
        ref = reference(folder, prompt_ids, conv)
        kept = json.loads((folder / "config.json").read_text()).get("layer_types")
        for q, kv in [(q, kv) for q in quants for kv in ("f16", "f32")]:
            gguf, why = to_gguf(converter, folder, work / f"{name}-{q}.gguf", q)
            if why is None:
                print(f"{name} {q}, KV cache {kv}: llama.cpp", flush=True)
                logits_out = work / f"{name}-{q}-{kv}.logits.npy"
                res, why = in_child({"kind": "agree", "site": str(root / "site"), "gguf": str(gguf), "kv": kv,
                                     "threads": args.threads, "prompt": PROMPT, "prompt_ids": prompt_ids,
                                     "reference": ref["greedy"], "generate": GENERATE,
                                     "logits_out": str(logits_out)})  # fmt: skip
            if why is not None:
                refused[(name, q)] = why
                rows.append({"model": name, "quant": q, "kv": kv, "refused": why})
                print(f"  refused: {why}")
                continue
            ggufs[(name, q)] = gguf
            theirs = np.load(logits_out)
            row = {
                "model": name,
                "quant": q,
                "kv": kv,
                "layers": f"{sum(t in ('attention', 'full_attention') for t in kept)} attention / {len(kept)}"
                if kept
                else "30 attention / 30",
                "last_diff": float(np.abs(theirs[0] - ref["logits"][0]).max()),
                "forced_diff": float(np.abs(theirs[1:] - ref["logits"]).max()),
                "logit_scale": float(np.abs(ref["logits"][0]).max()),
                "greedy_leading": leading(res["greedy"], ref["greedy"]),
                "greedy_same": sum(a == b for a, b in zip(res["greedy"], ref["greedy"])),
                "forced_argmax": int((theirs[1:].argmax(-1) == ref["logits"].argmax(-1)).sum()),
                "tokenizer_same": res["tokenized"] == prompt_ids,
                "text": tok.decode(res["greedy"]),
            }
            if q == "q8_0":  # quantization alone: transformers with q8_0-rounded matrices against transformers
                row["q8_0_in_hf"] = float(np.abs(ref["q8_0_logits"][0] - ref["logits"][0]).max())
            if "ours_logits" in ref:
                row["ours_vs_hf"] = float(np.abs(ref["ours_logits"] - ref["logits"]).max())
                row["ours_greedy_same"] = ref["ours_greedy"] == ref["greedy"]
            rows.append(row)
            print("  " + json.dumps({k: v for k, v in row.items() if k != "text"}), flush=True)

    speed = {}
    if args.speed:
        contexts = [int(c) for c in args.contexts.split(",")]
        for q in quants:
            for name in models:
                if name == "qwen3-gdn" or (name, q) not in ggufs:
                    continue
                print(f"speed {name} {q} at {contexts}", flush=True)
                res, why = in_child({"kind": "speed", "site": str(root / "site"), "gguf": str(ggufs[(name, q)]),
                                     "threads": args.threads, "contexts": contexts, "decode": args.decode},
                                    timeout=7200)  # fmt: skip
                speed[(name, q)] = res if why is None else why
                print(f"  {speed[(name, q)]}", flush=True)

    md = report(args, build_seconds, rows, speed, prompt_ids)
    print(md)
    if args.out:
        Path(args.out).write_text(md)
    return 0


def report(args, build_seconds, rows, speed, prompt_ids):
    import torch
    import transformers

    argv = sys.argv[1:]
    if "--note" in argv:  # the note is about this run, not part of the command
        del argv[argv.index("--note") : argv.index("--note") + 2]
    command = " ".join(["python benchmarks/llama_cpp_check.py", *(a for a in argv if not a.startswith("--note="))])
    lines = [
        "# llama.cpp runs the exports (issue #25)",
        "",
        f"Command: `{command}`",
        "",
        f"llama-cpp-python {args.version} (its vendored llama.cpp and `convert_hf_to_gguf.py`), built from the sdist "
        f"on CPU in {build_seconds} s ({args.jobs} jobs); transformers {transformers.__version__}, torch "
        f"{torch.__version__}; {args.threads} threads; {os.cpu_count()} CPU cores. {args.note}",
        "",
        f"Prompt: {len(prompt_ids)} tokens of prose, then {GENERATE} greedy tokens. Reference: transformers on the "
        "folder llama.cpp converted (fp32); `last`: max |logit difference| at the prompt's last position; `forced`: "
        f"the same over all {GENERATE + 1} positions with the reference's tokens fed to llama.cpp; `greedy`: leading "
        "tokens of llama.cpp's own greedy run equal to the reference's (and how many of the 32 positions agree); "
        "`tok`: llama.cpp's tokenizer (from the GGUF's metadata) gives transformers' ids for the prompt. `KV "
        "cache`: llama.cpp's default f16 cache of the attention layers' keys and values, or f32 (`type_k`, `type_v`). "
        "For the hybrids, `ours vs hf`: linearize's converted checkpoint against its transformers export (max "
        "|logit difference| over the same positions). `q8_0 in hf`: what q8_0's rounding of the weights alone does, "
        "engine aside: transformers with every matrix rounded as q8_0 stores it, against transformers (last position).",
        "",
        "| model | kept layers | GGUF | KV cache | last | forced | |logits| max | greedy (of 32) | argmax under "
        "forcing | tok | ours vs hf | q8_0 in hf |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['model']} | | {r['quant']} | {r['kv']} | refused: `{r['refused']}` | | | | | | | |")
            continue
        ours = (
            f"{r['ours_vs_hf']:.2g}{'' if r['ours_greedy_same'] else ' (tokens differ)'}" if "ours_vs_hf" in r else ""
        )
        lines.append(
            f"| {r['model']} | {r['layers']} | {r['quant']} | {r['kv']} | {r['last_diff']:.3g} | "
            f"{r['forced_diff']:.3g} | "
            f"{r['logit_scale']:.3g} | {r['greedy_leading']} ({r['greedy_same']}) | {r['forced_argmax']}/"
            f"{GENERATE + 1} | {'yes' if r['tokenizer_same'] else 'NO'} | {ours} | "
            f"{format(r['q8_0_in_hf'], '.3g') if 'q8_0_in_hf' in r else ''} |"
        )
    lines += ["", "llama.cpp's greedy text:", ""]
    lines += [f"- {r['model']} {r['quant']} (KV {r['kv']}): {r['text']!r}" for r in rows if "text" in r]
    if speed:
        contexts = [int(c) for c in args.contexts.split(",")]
        lines += [
            "",
            f"## Speed in llama.cpp ({args.threads} threads)",
            "",
            f"Prefill: tokens/s over a prompt of the context's length (batches of 512); decode: median ms/token of "
            f"{args.decode} single-token steps after it (random tokens). The models ran one after another, each in a "
            "fresh process.",
            "",
            "| GGUF | model | " + " | ".join(f"prefill {c} tok/s | decode@{c} ms" for c in contexts) + " |",
            "|---|---|" + "---|---|" * len(contexts),
        ]
        for (name, q), res in speed.items():
            if isinstance(res, str):
                lines.append(f"| {q} | {name} | failed: `{res}` |")
                continue
            cells = " | ".join(f"{res[str(c)]['prefill_tok_s']:.0f} | {res[str(c)]['decode_ms']:.1f}" for c in contexts)
            lines.append(f"| {q} | {name} | {cells} |")
        lines += ["", "Student / teacher (decode ms ratio; below 1 is faster):", ""]
        for (name, q), res in speed.items():
            teacher = speed.get(("teacher", q))
            if name == "teacher" or isinstance(res, str) or not isinstance(teacher, dict):
                continue
            ratios = ", ".join(
                f"{c}: decode {res[str(c)]['decode_ms'] / teacher[str(c)]['decode_ms']:.2f}x, prefill "
                f"{res[str(c)]['prefill_tok_s'] / teacher[str(c)]['prefill_tok_s']:.2f}x the teacher's tok/s"
                for c in contexts
            )
            lines.append(f"- {name} {q}: {ratios}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
