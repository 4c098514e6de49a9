"""RecurFormer: measure every head's recency on calibration text; heads that look only at recent tokens
become Mamba heads on their own q/k/v, the rest keep softmax attention (and a smaller KV cache).

Published idea (Yan et al., RecurFormer, 2024): replace the attention heads that show a recency
pattern with Mamba, keep the others, and continue training briefly. This recipe converts the most
local half of the heads (--recency-fraction 0.5; a threshold is the alternative), trains the new
Mamba parameters by attention transfer, then LoRA KD, with LoLCATs-like budgets on a GPU.

    python cookbook/recurformer.py --base Qwen/Qwen2.5-1.5B-Instruct --out qwen-recurformer
    python cookbook/recurformer.py --smoke
"""

from linearize.pipeline import main_job

from smoke import SMOKE, check, recipe_args, tiny_base_dir

PUBLISHED = dict(base="Qwen/Qwen2.5-1.5B-Instruct", recency_fraction=0.5, transfer=dict(lr=1e-2), kd=dict(lr=1e-4))

if __name__ == "__main__":
    args = recipe_args(__doc__)
    if args.smoke:
        base = tiny_base_dir()
        out = base.parent / "recurformer"
        result = main_job(
            base,
            "recurformer",
            out,
            convert_settings={"recency_fraction": 0.5, "recency_window": 16},
            stage_overrides={"transfer": {"lr": 5e-2}, "kd": {"lr": 5e-3}},
            **SMOKE,
        )
        check(result, out)
        from transformers import AutoConfig

        mixers = AutoConfig.from_pretrained(out, trust_remote_code=True).mixers
        assert sum(len(m["mamba_heads"]) for m in mixers if m) == 8  # half of 4 layers x 4 heads
    else:
        main_job(
            args.base or PUBLISHED["base"],
            "recurformer",
            args.out or "recurformer-out",
            data=args.data,
            convert_settings={"recency_fraction": PUBLISHED["recency_fraction"]},
            stage_overrides={"transfer": PUBLISHED["transfer"], "kd": PUBLISHED["kd"]},
        )
