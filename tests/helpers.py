"""What tests share: tiny bases shaped like Hub checkpoints, settings that exercise each target, and checks.
Imported as `from helpers import ...` (pyproject.toml puts tests/ on the path); fixtures live in conftest.py."""

import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from linearize.convert.targets import MIXERS

from hub_configs import HUB_CONFIGS, SIZES, hub_config, hub_config_dict

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
HUB_BASES = tuple(HUB_CONFIGS)  # every hub-shaped base; each family name stands for one of them
COMMON = dict(SIZES, pad_token_id=0, eos_token_id=1, bos_token_id=2)  # sizes for bases built by hand


def tiny_base(family, seed=0, layers=3):
    """A tiny random base built from the config.json of a real Hub checkpoint of ``family`` (see
    tests/hub_configs.py), sizes scaled down: GQA with 6 query heads and 2 KV heads, head_dim as the
    shipped file has it (absent for Mistral and Qwen2; qwen3 keeps 12 != hidden / heads). ``family`` is a
    family name (its default base, ``DEFAULT_FOR_FAMILY``) or a ``HUB_BASES`` name. Weights are float32,
    as ``from_pretrained(..., dtype=torch.float32)`` (what ``linearize convert`` does) would load them."""
    config = hub_config(family, layers=layers)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def tiny_smollm2(vocab_size, layers=2, seed=0):
    """A tiny random base from the embedded SmolLM2-135M-Instruct's config.json (tests/hub_configs.py: sizes
    scaled down, rope theta, norm eps, token ids and tied embeddings as shipped), with ``vocab_size`` rows: the
    length of the embedded tokenizer it is paired with (49152, as shipped)."""
    config = hub_config_dict("smollm2", layers)
    config["vocab_size"] = vocab_size
    config = AutoConfig.for_model(config.pop("model_type"), **config)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def tiny_smollm2_dir(path, layers=2, seed=0):
    """``tiny_smollm2`` saved with the embedded tokenizer as a local folder, as a user's base would be; returns
    the path."""
    from linearize.convert.bases import load_tokenizer

    tok = load_tokenizer("llama")
    tiny_smollm2(len(tok), layers, seed).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def perturb_new_parameters(model, scale=0.3, seed=1):
    """Move the mixers' new parameters off their identity init, so tests exercise them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mixer in model.mixers().values():
            for name, p in mixer.named_parameters():
                if name in mixer.new_parameter_names():
                    p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def tiny_settings(base, target):
    """Conversion settings that exercise each target on a tiny model: a 4-token LoLCATs window (decode
    crosses it), and for RecurFormer a recency threshold at the median so layers mix both head kinds."""
    if target == "lolcats":
        return {"window": 4, "decay": 16, "sinks": 2}
    if target == "recurformer":
        from linearize.convert.calibration import head_recency

        ids = torch.randint(3, 128, (2, 40), generator=torch.Generator().manual_seed(11))
        threshold = head_recency(base, ids, window=8).median().item()
        return {"calibration": ids, "recency_window": 8, "recency_threshold": threshold}
    return {}


# The recurrences that take a softmax window and sinks mixed Liger's way (convert/window.py): the suites that run
# every target run each of them with a window too, as the case "<target>+window" (``case``).
WINDOWED = ("supra", "gla", "mamba", "gdn")
WINDOW = {"window": 4, "sinks": 2}  # decode and a 41-token forward cross the window; the sinks stay in it
# "gla+liger": Liger's published layer (softmax features, no rotary on the linear branch, no normaliser) with a window
# short enough for decode to cross it.
# "lolcats+sparse": LoLA's sparse cache (2 keys per head, chosen every 8 positions) beside the tiny LoLCATs window.
VARIANTS = {
    "window": WINDOW,
    "liger": {"window": 4, "feature_map": "softmax", "rotary": False, "normalize": False},
    "sparse": {"window": 4, "decay": 16, "sinks": 2, "sparse_cache": 2, "sparse_chunk": 8},
}
CASES = (*MIXERS, *(f"{t}+window" for t in WINDOWED), "gla+liger", "lolcats+sparse")


def case(base, name):
    """(target, conversion settings) of a ``CASES`` name on ``base``."""
    target, _, variant = name.partition("+")
    return target, (dict(VARIANTS[variant]) if variant else tiny_settings(base, target))


def assert_close(actual, expected, tol):
    diff = (actual.float() - expected.float()).abs().max().item()
    assert diff <= tol, f"max abs diff {diff:.3g} > {tol}"


# The console script installed beside this interpreter: what a user types, found without relying on
# PATH (the README runs the tests as `.venv/bin/python -m pytest`, with no virtualenv activated).
LINEARIZE = str(Path(sys.executable).with_name("linearize"))


# Loads checkpoints as a machine with only torch + transformers would (remote code; `import linearize` fails), several
# in one fresh interpreter: each interpreter pays ~9 s of imports, which CI paid once per checkpoint before.
WITHOUT_LINEARIZE = """
import subprocess
import sys
sys.modules["linearize"] = None  # any import of linearize now raises ImportError
import torch
from transformers import AutoModelForCausalLM
try:
    import linearize
    raise SystemExit("linearize was importable")
except ImportError:
    pass
for ckpt, ids_file, out_file in zip(*[iter(sys.argv[1:])] * 3):
    ids = torch.load(ids_file)["ids"]
    model = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        logits = model(ids).logits
        out = model.generate(ids[:, :6], attention_mask=torch.ones(1, 6, dtype=torch.long), max_new_tokens=8,
                             do_sample=False)
    torch.save({"logits": logits, "generated": out}, out_file)
"""


def outputs_without_linearize(checkpoints, ids, work):
    """Logits on ``ids`` and 8 greedy tokens after its first 6, of each checkpoint folder (named uniquely: remote code
    is cached by folder name) loaded without linearize, in one fresh isolated interpreter; a list of dicts."""
    work = Path(work)
    torch.save({"ids": ids}, work / "ids.pt")
    outs = [work / f"out-{i}.pt" for i in range(len(checkpoints))]
    args = [str(x) for ckpt, out in zip(checkpoints, outs) for x in (ckpt, work / "ids.pt", out)]
    subprocess.run([sys.executable, "-I", "-c", WITHOUT_LINEARIZE, *args], check=True, cwd=work)
    return [torch.load(out) for out in outs]
