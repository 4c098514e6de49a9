"""Gated DeltaNet hybrid, laid out as KL-guided hybrid distillation lays it out: a quarter of the layers keep
softmax attention, the rest become Gated DeltaNet layers from the attention's q/k/v/o; attention transfer, then
KL distillation of the whole hybrid with every weight training.

Published configuration (Distilling to Hybrid Attention Models via KL-Guided Layer Selection; fla-org/
hybrid-distillation, a RADLADS-style pipeline; their "gdn_v4" student): Qwen2.5 1.5B/3B/7B Instruct and Llama 3.2
3B teachers; Gated DeltaNet with an output gate and no short convolution, k and v repeated to the query heads;
stage 1 aligns every layer's attention output with an all-linear student (MSE, 100M tokens of 512, lr 1e-3 on a
cosine, only the new layers train); stage 2 distils the hybrid's logits by KL (600M tokens of 4096, every weight
training: lr 1e-4 on attention layers, 7e-6 on the rest, constant), with 12.5-50% of the layers softmax (25% their
main setting: 7 of 28). Their selector (GA-S2) restores one layer at a time to softmax in the stage-1 student, runs a
short stage 2 for each, and keeps the layers whose restoration lowers the loss most; DCLM text, DeepSpeed.

This recipe: that layer (``GDN_LAYER``, the main job's preset `linearize --base B --recipe gated-deltanet`), 25% of
the layers softmax, transfer at lr 1e-3, then KD of every weight at lr 1e-4 (one learning rate for all weights), at
their token counts and sequence lengths, ZeRO-2 on a GPU node. Differences, stated: the layers are ranked by the KL
of converting each one alone in the teacher (`--rank-by kl`, no training per candidate), and transfer aligns the
converted layers of the hybrid, not of an all-linear student (each layer's loss is its own attention's output either
way). The toolkit's gdn default differs from theirs in keeping the short convolution (Qwen3-Next's layer, which
`linearize export` can write natively; this one cannot be exported).

    torchrun --nproc_per_node 8 cookbook/gated_deltanet.py --base Qwen/Qwen2.5-3B-Instruct \\
        --data robbiegwaldd/dclm-10B --out qwen25-3b-gdn25
    python cookbook/gated_deltanet.py --smoke
"""

from transformers import AutoConfig

from linearize.pipeline import main_job
from linearize.recipes import GDN_LAYER, RECIPES

from smoke import SMOKE, check, recipe_args, tiny_base_dir

PRESET = RECIPES["gated-deltanet"]
PUBLISHED = dict(
    base="Qwen/Qwen2.5-3B-Instruct",
    data="robbiegwaldd/dclm-10B",
    deepspeed="distill/configs/zero2.json",
    transfer={**PRESET.stages["transfer"], "tokens": 100_000_000, "seq_len": 512},
    kd={**PRESET.stages["kd"], "tokens": 600_000_000, "seq_len": 4096},
)

if __name__ == "__main__":
    args = recipe_args(__doc__)
    if args.smoke:
        base = tiny_base_dir()
        out = base.parent / "gdn25"
        result = main_job(
            base,
            "gdn",
            out,
            keep_attention=PRESET.keep(4),  # auto:1 of the tiny base's 4 layers, ranked by KL
            convert_settings=PRESET.settings,
            stage_overrides={"transfer": {"lr": 1e-2}, "kd": {**PRESET.stages["kd"], "lr": 1e-3}},
            **SMOKE,
        )
        check(result, out)
        config = AutoConfig.from_pretrained(out, trust_remote_code=True)
        converted = [m for m in config.mixers if m]
        assert len(converted) == 3 and all(m.items() >= GDN_LAYER.items() for m in converted), config.mixers
        assert config.linearize["plan_evidence"]["ranked_by"] == "kl"
    else:
        main_job(
            args.base or PUBLISHED["base"],
            "gdn",
            args.out or "gated-deltanet-out",
            data=args.data or PUBLISHED["data"],
            keep_attention=PRESET.keep(AutoConfig.from_pretrained(args.base or PUBLISHED["base"]).num_hidden_layers),
            convert_settings=PRESET.settings,
            deepspeed=PUBLISHED["deepspeed"],
            stage_overrides={"transfer": PUBLISHED["transfer"], "kd": PUBLISHED["kd"]},
        )
