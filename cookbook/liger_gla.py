"""Liger: gated linear attention whose forget gate comes from the key projection, plus a 64-token sliding-window
softmax, the two outputs mixed 0.5 / 0.5; conversion adds only the mix's per-head logits, and LoRA recovers quality.

Published configuration (Lan et al., Liger, ICML 2025; OpenSparseLLMs/Linearization, liger_gla): Llama 3 8B (and
Mistral 7B, Qwen), every layer converted. The linear branch is GLA with softmax feature maps on q and k (over each
head's dimensions), gate logsigmoid(avgpool(k)) / 16 per key channel (the pool's output is k's own size, so the
gate is logsigmoid(k) / 16), no rotary, no normaliser (scale 1); beside it softmax attention over a 64-token sliding
window with the teacher's rotary; output = 0.5 window + 0.5 GLA. Training: LoRA r=8 (peft's default alpha 8) on
q/k/v, lr 1e-3, next-token cross-entropy on Alpaca-cleaned, about 20M tokens (2 epochs at up to 1024 tokens).

This recipe: that layer (``LIGER_LAYER``; the mix is a per-head logit starting at 0.5, and with only LoRA training
it stays there) and that LoRA, learning rate, data and budget, all in the KD stage (no attention transfer). One
difference: the objective is the KL to the teacher's logits, not cross-entropy on the data (the KD stage has no
cross-entropy-only objective). Ours, the toolkit's gla defaults, differ in the layer: elu(x) + 1 features on the
rotated q and k with the linear-attention normaliser, and no window unless --window (then the mix is learned and
--sinks keeps the first tokens in the window's softmax).

    python cookbook/liger_gla.py --base meta-llama/Meta-Llama-3-8B --data yahma/alpaca-cleaned --out llama3-liger
    python cookbook/liger_gla.py --smoke
"""

from transformers import AutoConfig

from linearize.pipeline import main_job
from linearize.recipes import LIGER_KD, LIGER_LAYER

from smoke import SMOKE, check, recipe_args, tiny_base_dir

# The layer and the KD settings are the main job's preset (`linearize --base B --recipe liger`); the scale is Liger's.
PUBLISHED = dict(base="meta-llama/Meta-Llama-3-8B", data="yahma/alpaca-cleaned", tokens=20_000_000, kd=LIGER_KD)

if __name__ == "__main__":
    args = recipe_args(__doc__)
    smoke = args.smoke
    base = tiny_base_dir() if smoke else args.base or PUBLISHED["base"]
    out = base.parent / "liger" if smoke else args.out or "liger-out"
    budget = SMOKE if smoke else dict(data=args.data or PUBLISHED["data"], tokens=PUBLISHED["tokens"])
    # Published: the whole budget to KD (the main job's default split gives transfer 55%); the smoke run keeps the
    # default split's short KD and a higher learning rate for its few steps.
    kd = {**PUBLISHED["kd"], **({"lr": 5e-3} if smoke else {"tokens": PUBLISHED["tokens"]})}
    result = main_job(
        base, "gla", out, convert_settings=LIGER_LAYER, stage_overrides={"transfer": {"skip": True}, "kd": kd}, **budget
    )
    if smoke:
        check(result, out, kept_layers=[])
        assert list(result["stages"]) == ["kd"]  # no attention transfer
        layers = AutoConfig.from_pretrained(out, trust_remote_code=True).mixers
        assert all(m.items() >= LIGER_LAYER.items() for m in layers), layers
