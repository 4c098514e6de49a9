"""Peak resident memory of `linearize convert` on a randomly initialised model shaped like Llama-3.2-1B.

The base is built once (random normal weights, std 0.02; norms 1) and saved as an HF folder in float32,
the dtype `linearize convert` loads it in on CPU, so the base's weights take the same bytes on disk and in
memory (``--dtype bfloat16``: saved in bfloat16 and converted with ``--dtype bfloat16``). Each
measurement is one fresh process; its peak RSS is the kernel's ru_maxrss for that child (os.wait4),
which counts everything the process touched: Python, torch, the loaded base (file pages of the mapped
safetensors included), the converted model, the save. The ratio is peak RSS / the base's weight bytes
(tied embeddings counted once).

    python benchmarks/convert_memory.py [--dtype float32] [--targets lolcats mamba] [--md FILE] [--shape SHAPE]

Rows: `load and read` (the floor: importing linearize, loading the base and reading each weight once), then
`linearize convert --base DIR --to TARGET --out OUT` for each target.

This file also holds what benchmarks/scale_rehearsal.py builds on: the real shapes (``SHAPES``), the random
base (``random_base``, ``make_base``) and the peak-RSS measurement of a child process (``peak_rss``).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# meta-llama/Llama-3.2-1B-Instruct's config.json (sizes, rope, tie), as shipped.
LLAMA_3_2_1B = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "use_cache": True,
    "vocab_size": 128256,
}
# meta-llama/Llama-3.1-8B's config.json: no head_dim (4096 / 32 = 128), untied, llama3 rope scaling by 8.
LLAMA_3_1_8B = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "use_cache": True,
    "vocab_size": 128256,
}
# Qwen/Qwen3-1.7B's and Qwen/Qwen3-8B's config.json: head_dim 128 given, q/k norms (in the architecture), 1.7B
# tied, 8B untied.
QWEN3_1_7B = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 6144,
    "max_position_embeddings": 40960,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}
QWEN3_8B = {
    **QWEN3_1_7B,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "max_window_layers": 36,
    "num_attention_heads": 32,
    "num_hidden_layers": 36,
    "tie_word_embeddings": False,
}

# HuggingFaceTB/SmolLM2-135M-Instruct's config.json (the embedded default model's shape): no head_dim (576 / 9 = 64),
# tied, rope_scaling null, nanotron's extra fields.
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 576,
    "initializer_range": 0.041666666666666664,
    "intermediate_size": 1536,
    "is_llama_config": True,
    "max_position_embeddings": 8192,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "pad_token_id": 2,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_interleaved": False,
    "rope_scaling": None,
    "rope_theta": 100000,
    "tie_word_embeddings": True,
    "use_cache": True,
    "vocab_size": 49152,
}

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=512,
    bos_token_id=0,
    eos_token_id=1,
)


def tiny(config):
    """``config`` shrunk, every field kept (head_dim only where the file has one): the shapes of the scripts' dry
    runs and tests."""
    small = {**config, **TINY}
    if "head_dim" in config:
        small["head_dim"] = 16
    if "max_window_layers" in config:
        small["max_window_layers"] = TINY["num_hidden_layers"]
    return small


SHAPES = {
    "llama-1b": LLAMA_3_2_1B,
    "llama-8b": LLAMA_3_1_8B,
    "qwen3-1.7b": QWEN3_1_7B,
    "qwen3-8b": QWEN3_8B,
    "smollm2-135m": SMOLLM2_135M,
    "tiny-llama": tiny(LLAMA_3_2_1B),
    "tiny-qwen3": tiny(QWEN3_1_7B),
}


def random_base(config, dtype="float32", device="cpu", seed=0):
    """A causal LM of ``config``'s shape (a config.json dict) with random weights (normal, std 0.02; norms 1).
    Built on the meta device and given memory once on ``device``, where it is filled: an 8B shape costs one
    copy of its weights and no CPU-side initialisation. Same seed, device and dtype: the same weights."""
    import copy

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = copy.deepcopy(config)  # transformers rewrites rope_scaling in place
    cfg = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    model.to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)  # RMSNorm weights
            else:
                p.normal_(0.0, 0.02, generator=g)
    # to_empty left the buffers that are not saved (the rotary frequencies) uninitialised: compute them.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=cfg).to(device)
    model.tie_weights()
    return model.eval()


MAKE_BASE = """
import json, sys
sys.path.insert(0, sys.argv[4])
from convert_memory import random_base
random_base(json.loads(sys.argv[3]), sys.argv[2]).save_pretrained(sys.argv[1])
"""


# The floor: the base loaded and each of its tensors read once (from_pretrained may map the file and leave
# pages untouched until used; conversion and saving read them all).
READ_BASE = """
import sys, torch
from linearize.convert.bases import load_base
model = load_base(sys.argv[1], *([getattr(torch, sys.argv[2])] if sys.argv[2] != "float32" else []))
with torch.no_grad():
    print(max(float(t.max()) for t in model.state_dict().values()))  # reads every page, allocates nothing big
"""


def base_dir(shape, dtype):
    """Where the random base of ``shape`` in ``dtype`` is kept between runs (made once)."""
    return Path(tempfile.gettempdir()) / "linearize-bench" / f"{shape}-random-{dtype}"


def make_base(folder, dtype="float32", config=LLAMA_3_2_1B):
    """The random base of ``config``'s shape as an HF folder (safetensors in ``dtype``), made once (atomically),
    in a child process so that this one never holds it."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    from linearize.convert.save import atomic_folder

    with atomic_folder(folder) as tmp:
        subprocess.run([sys.executable, "-c", MAKE_BASE, str(tmp), dtype, json.dumps(config), str(HERE)], check=True)
    return folder


def weight_bytes(folder):
    """Bytes of the base's weights as the safetensors files hold them (each tensor once)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for key in st.keys():
                sl = st.get_slice(key)
                n = 1
                for d in sl.get_shape():
                    n *= d
                total += n * {"F32": 4, "BF16": 2, "F16": 2}[sl.get_dtype()]
    return total


def linearize_cli():
    """The `linearize` command of this interpreter's environment (beside it, or on PATH where pip put it elsewhere,
    as `pip install --target` does)."""
    beside = Path(sys.executable).with_name("linearize")
    return [str(beside) if beside.exists() else shutil.which("linearize") or "linearize"]


def peak_rss(cmd):
    """(peak RSS in bytes, seconds) of ``cmd`` run as one child process."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return usage.ru_maxrss * 1024, time.time() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-dir", help="where the random base is kept (made once); default: under the temp dir")
    p.add_argument("--shape", default="llama-1b", choices=list(SHAPES), help="whose config.json (default llama-1b)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="the base's dtype on disk, and (passed as --dtype unless float32) the one it is loaded in",
    )
    p.add_argument("--targets", nargs="+", default=["lolcats", "mamba"])
    p.add_argument("--md", help="append the table to this markdown file")
    p.add_argument("--label", default="", help="a note for the table's heading (e.g. the commit measured)")
    args = p.parse_args(argv)
    base = make_base(args.base_dir or base_dir(args.shape, args.dtype), args.dtype, SHAPES[args.shape])
    wbytes = weight_bytes(base)
    linearize = linearize_cli()
    rows = []
    load = [sys.executable, "-c", READ_BASE, str(base), args.dtype]
    dtype_arg = [] if args.dtype == "float32" else ["--dtype", args.dtype]
    rss, secs = peak_rss(load)
    rows.append(("load and read every weight once (`load_base`)", rss, secs))
    print(f"load and read: peak RSS {rss / 2**30:.2f} GiB ({rss / wbytes:.3f}x) in {secs:.0f}s", flush=True)
    for target in args.targets:
        out = Path(tempfile.mkdtemp(prefix=f"convert-memory-{target}-"))
        try:
            rss, secs = peak_rss(
                [*linearize, "convert", "--base", str(base), "--to", target, "--out", str(out / "m"), *dtype_arg]
            )
        finally:
            shutil.rmtree(out, ignore_errors=True)
        rows.append((f"`linearize convert --to {target}{' '.join(['', *dtype_arg])}`", rss, secs))
        print(f"{target}: peak RSS {rss / 2**30:.2f} GiB ({rss / wbytes:.3f}x) in {secs:.0f}s", flush=True)
    lines = [
        f"### {args.label or 'measurement'}",
        "",
        f"base: random {args.shape} shape, {args.dtype} on disk and in memory, weights {wbytes:,} bytes "
        f"({wbytes / 2**30:.2f} GiB)",
        "",
        "| run | peak RSS | peak RSS / base weights | seconds |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {rss / 2**30:.2f} GiB | {rss / wbytes:.3f}x | {secs:.0f} |" for name, rss, secs in rows]
    table = "\n".join(lines) + "\n"
    print(table)
    print(
        json.dumps(
            {"weight_bytes": wbytes, "rows": [{"run": n, "peak_rss": r, "seconds": round(s, 1)} for n, r, s in rows]}
        )
    )
    if args.md:
        with open(args.md, "a") as f:
            f.write("\n" + table)


if __name__ == "__main__":
    main()
