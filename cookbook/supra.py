"""SUPRA: every layer becomes decayed linear attention with a shared ReLU feature map, rotary after it,
fixed RetNet decays and a GroupNorm output; then the whole model is uptrained.

Published configuration (Mercat et al., Linearizing Large Language Models, COLM 2024): Llama 2 7B
and Mistral 7B uptrained end to end on web text with a language-modelling loss, at about 5% of
their pretraining compute (tens of billions of tokens), on multi-node GPU clusters. Here: no
attention transfer (SUPRA does not use one); the kd stage trains all weights on next-token
cross-entropy plus KL to the original model (--train all --ce-weight 1), ZeRO-2 on a GPU node.

    torchrun --nproc_per_node 8 cookbook/supra.py --base mistralai/Mistral-7B-v0.1 --data HuggingFaceFW/fineweb \
        --out mistral-supra
    python cookbook/supra.py --smoke
"""

from linearize.pipeline import main_job

from smoke import SMOKE, check, recipe_args, tiny_base_dir

PUBLISHED = dict(
    base="mistralai/Mistral-7B-v0.1",
    deepspeed="distill/configs/zero2.json",
    kd=dict(lr=1e-5, train="all", ce_weight=1.0),
)
NO_TRANSFER = {"transfer": {"skip": True}}

if __name__ == "__main__":
    args = recipe_args(__doc__)
    if args.smoke:
        base = tiny_base_dir()
        out = base.parent / "supra"
        result = main_job(
            base,
            "supra",
            out,
            stage_overrides={**NO_TRANSFER, "kd": {"lr": 1e-3, "train": "all", "ce_weight": 1.0}},
            **SMOKE,
        )
        check(result, out, kept_layers=[])
        assert "transfer" not in result["stages"]
    else:
        main_job(
            args.base or PUBLISHED["base"],
            "supra",
            args.out or "supra-out",
            data=args.data,
            deepspeed=PUBLISHED["deepspeed"],
            stage_overrides={**NO_TRANSFER, "kd": PUBLISHED["kd"]},
        )
