"""Peak resident memory of `linearize convert` on a randomly initialised model shaped like Llama-3.2-1B.

The base is built once (random normal weights, std 0.02; norms 1) and saved as an HF folder in float32,
the dtype `linearize convert` loads it in on CPU, so the base's weights take the same bytes on disk and in
memory (``--dtype bfloat16``: saved in bfloat16 and converted with ``--dtype bfloat16``). Each
measurement is one fresh process; its peak RSS is the kernel's ru_maxrss for that child (os.wait4),
which counts everything the process touched: Python, torch, the loaded base (file pages of the mapped
safetensors included), the converted model, the save. The ratio is peak RSS / the base's weight bytes
(tied embeddings counted once).

    python benchmarks/convert_memory.py [--dtype float32] [--targets lolcats mamba] [--md FILE]

Rows: `load and read` (the floor: importing linearize, loading the base and reading each weight once), then
`linearize convert --base DIR --to TARGET --out OUT` for each target.
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

# meta-llama/Llama-3.2-1B-Instruct's config.json (sizes, rope, tie), as shipped.
LLAMA_3_2_1B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": False,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "use_cache": True, "vocab_size": 128256,
}

MAKE_BASE = r"""
import sys, torch
from transformers import AutoModelForCausalLM, LlamaConfig
config = LlamaConfig(**__CONFIG__)
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, sys.argv[2]))
model.to_empty(device="cpu")
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for name, p in model.named_parameters():
        if p.dim() == 1:
            p.fill_(1.0)  # RMSNorm weights
        else:
            p.normal_(0.0, 0.02, generator=g)
model.tie_weights()
model.save_pretrained(sys.argv[1])
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


def make_base(folder, dtype="float32"):
    """The random 1B-shaped base as an HF folder (safetensors in ``dtype``), made once (atomically)."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    from linearize.convert.save import atomic_folder

    with atomic_folder(folder) as tmp:
        subprocess.run([sys.executable, "-c", MAKE_BASE.replace("__CONFIG__", repr(LLAMA_3_2_1B)), str(tmp), dtype],
                       check=True)
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
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="the base's dtype on disk, and (passed as --dtype unless float32) the one it is loaded in")
    p.add_argument("--targets", nargs="+", default=["lolcats", "mamba"])
    p.add_argument("--md", help="append the table to this markdown file")
    p.add_argument("--label", default="", help="a note for the table's heading (e.g. the commit measured)")
    args = p.parse_args(argv)
    base = make_base(args.base_dir or os.path.join(tempfile.gettempdir(), "linearize-bench",
                                                   f"llama-3.2-1b-random-{args.dtype}"), args.dtype)
    wbytes = weight_bytes(base)
    linearize = [str(Path(sys.executable).with_name("linearize"))]
    rows = []
    load = [sys.executable, "-c", READ_BASE, str(base), args.dtype]
    dtype_arg = [] if args.dtype == "float32" else ["--dtype", args.dtype]
    rss, secs = peak_rss(load)
    rows.append(("load and read every weight once (`load_base`)", rss, secs))
    print(f"load and read: peak RSS {rss / 2**30:.2f} GiB ({rss / wbytes:.3f}x) in {secs:.0f}s", flush=True)
    for target in args.targets:
        out = Path(tempfile.mkdtemp(prefix=f"convert-memory-{target}-"))
        try:
            rss, secs = peak_rss([*linearize, "convert", "--base", str(base), "--to", target, "--out", str(out / "m"),
                                  *dtype_arg])
        finally:
            shutil.rmtree(out, ignore_errors=True)
        rows.append((f"`linearize convert --to {target}{' '.join(['', *dtype_arg])}`", rss, secs))
        print(f"{target}: peak RSS {rss / 2**30:.2f} GiB ({rss / wbytes:.3f}x) in {secs:.0f}s", flush=True)
    lines = [f"### {args.label or 'measurement'}", "",
             f"base: random Llama-3.2-1B shape, {args.dtype} on disk and in memory, weights {wbytes:,} bytes "
             f"({wbytes / 2**30:.2f} GiB)", "",
             "| run | peak RSS | peak RSS / base weights | seconds |", "|---|---|---|---|"]
    lines += [f"| {name} | {rss / 2**30:.2f} GiB | {rss / wbytes:.3f}x | {secs:.0f} |" for name, rss, secs in rows]
    table = "\n".join(lines) + "\n"
    print(table)
    print(json.dumps({"weight_bytes": wbytes, "rows": [{"run": n, "peak_rss": r, "seconds": round(s, 1)} for n, r, s in rows]}))
    if args.md:
        with open(args.md, "a") as f:
            f.write("\n" + table)


if __name__ == "__main__":
    main()
