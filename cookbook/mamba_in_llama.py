"""MambaInLlama: a hybrid keeping 50% (or 25%) of the attention layers, the rest Mamba-2 layers initialised
from the attention weights (C <- q, B <- k, x <- v, out <- o), then end-to-end distillation.

Published configuration (Wang et al., The Mamba in the Llama, NeurIPS 2024): Llama 3 8B Instruct (or
Zephyr 7B) as the teacher and initialisation, 1/2, 1/4 and 1/8 attention hybrids, end-to-end KL to
the teacher's logits on chat data, run with accelerate + DeepSpeed ZeRO-3 on 8x80GB GPUs for 3-4
days. Here: a short attention transfer of the new Mamba parameters, then KD training the mixers'
projections and new parameters (--train attention), ZeRO-3 on a GPU node.

    torchrun --nproc_per_node 8 cookbook/mamba_in_llama.py --base meta-llama/Meta-Llama-3-8B-Instruct \\
        --data HuggingFaceH4/ultrachat_200k --out llama3-mamba50
    python cookbook/mamba_in_llama.py --smoke
"""

from linearize.pipeline import main_job

from smoke import SMOKE, check, recipe_args, tiny_base_dir

PUBLISHED = dict(
    base="meta-llama/Meta-Llama-3-8B-Instruct",
    keep_attention="0.5",
    deepspeed="distill/configs/zero3.json",
    transfer=dict(lr=1e-3),
    kd=dict(lr=1e-5, train="attention"),
)

if __name__ == "__main__":
    args = recipe_args(__doc__)
    if args.smoke:
        base = tiny_base_dir()
        out = base.parent / "mamba50"
        result = main_job(
            base,
            "mamba",
            out,
            keep_attention="0.5",
            stage_overrides={"transfer": {"lr": 1e-2}, "kd": {"lr": 1e-3, "train": "attention"}},
            **SMOKE,
        )
        check(result, out, kept_layers=[1, 3])  # half the layers, evenly spread, ending at the last
    else:
        main_job(
            args.base or PUBLISHED["base"],
            "mamba",
            args.out or "mamba-in-llama-out",
            data=args.data,
            keep_attention=PUBLISHED["keep_attention"],
            deepspeed=PUBLISHED["deepspeed"],
            stage_overrides={"transfer": PUBLISHED["transfer"], "kd": PUBLISHED["kd"]},
        )
