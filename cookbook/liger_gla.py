"""Liger: gated linear attention whose forget gate comes from the key projection, so conversion adds no
parameters; LoRA then recovers quality.

Published configuration (Lan et al., Liger, ICML 2025): Llama 3 8B (and Mistral 7B) linearized with
LoRA fine-tuning on about 20M tokens of instruction data (Alpaca-clean), built on LoLCATs' training
loop. Liger also mixes in a sliding-window softmax (Liger Attention), which this target does not yet
offer. With no new parameters there is no attention transfer: KD with LoRA r=8 on q/k/v/o only.

    python cookbook/liger_gla.py --base meta-llama/Meta-Llama-3-8B --data yahma/alpaca-cleaned --out llama3-liger
    python cookbook/liger_gla.py --smoke
"""

from linearize.pipeline import main_job

from smoke import SMOKE, check, recipe_args, tiny_base_dir

PUBLISHED = dict(
    base="meta-llama/Meta-Llama-3-8B",
    data="yahma/alpaca-cleaned",
    tokens=20_000_000,
    kd=dict(lr=1e-4, lora_r=8, lora_alpha=16),
)

if __name__ == "__main__":
    args = recipe_args(__doc__)
    if args.smoke:
        base = tiny_base_dir()
        out = base.parent / "liger"
        result = main_job(base, "gla", out, stage_overrides={"kd": {"lr": 5e-3}}, **SMOKE)
        check(result, out, kept_layers=[])
        assert list(result["stages"]) == ["kd"]  # nothing new to transfer
    else:
        main_job(
            args.base or PUBLISHED["base"],
            "gla",
            args.out or "liger-out",
            data=args.data or PUBLISHED["data"],
            tokens=PUBLISHED["tokens"],
            stage_overrides={"kd": PUBLISHED["kd"]},
        )
