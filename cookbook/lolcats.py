"""LoLCATs: Hedgehog feature maps + a 64-token softmax window in every layer; attention transfer, then LoRA.

Published configuration (Zhang et al., LoLCATs, ICLR 2025) for Llama 3 8B on one GPU node:
attention transfer of the feature maps and window mixing factors (MSE to each layer's softmax
output, AdamW lr 1e-2) on Alpaca-clean sequences of 1024 tokens, then LoRA r=8 (alpha 16) on
q/k/v/o trained end to end (lr 1e-4); about 40M tokens in all. No DeepSpeed needed at 8B (LoRA).

    python cookbook/lolcats.py --base meta-llama/Meta-Llama-3-8B --data yahma/alpaca-cleaned --out llama3-lolcats
    python cookbook/lolcats.py --smoke
"""

from linearize.pipeline import main_job

from smoke import SMOKE, check, recipe_args, tiny_base_dir

PUBLISHED = dict(
    base="meta-llama/Meta-Llama-3-8B",
    data="yahma/alpaca-cleaned",
    tokens=40_000_000,
    seq_len=1024,
    transfer=dict(lr=1e-2),
    kd=dict(lr=1e-4, lora_r=8, lora_alpha=16),
)


def run(base, out, data=None, tokens=None, seq_len=None, batch_size=None):
    return main_job(
        base,
        "lolcats",
        out,
        data=data,
        tokens=tokens,
        seq_len=seq_len,
        batch_size=batch_size,
        stage_overrides={"transfer": PUBLISHED["transfer"], "kd": PUBLISHED["kd"]},
    )


if __name__ == "__main__":
    args = recipe_args(__doc__)
    if args.smoke:
        base = tiny_base_dir()
        out = base.parent / "lolcats"
        # A window of 8 so the tiny 64-token run exercises the linear part too.
        result = main_job(
            base,
            "lolcats",
            out,
            convert_settings={"window": 8},
            stage_overrides={"transfer": {"lr": 5e-2}, "kd": PUBLISHED["kd"] | {"lr": 5e-3}},
            **SMOKE,
        )
        check(result, out, kept_layers=[])
    else:
        run(
            args.base or PUBLISHED["base"],
            args.out or "lolcats-out",
            args.data or PUBLISHED["data"],
            PUBLISHED["tokens"],
            PUBLISHED["seq_len"],
        )
