"""Long context: the main job's default recipe. LoLCATs layers with a learned per-head decay and attention
sinks, softmax attention kept in the layers whose lone conversion costs the most KL at the answers of
retrieval probes that state three distractor facts beside the asked one, and after training LoLA's sparse cache:
256 keys per key/value head that left the window kept exact, chosen by the attention they received per query that
saw them.

Why (benchmarks/smollm2/length.md): a LoLCATs layer's linear sum grows with every token and swamps its
64-token window past the training length; a decay (memory spans 8-64 tokens at init) keeps it the
size it was in training; 4 attention sinks give the window's softmax the first tokens its heads rely
on; softmax layers ranked by KL rather than by recency or spread evenly keep in-context recall (passkey, MQAR),
and 12/30 of them ranked by the KL at the answers of retrieval probes find a passkey in ordinary text as often as
the teacher does at 2048 tokens (benchmarks/smollm2/recall-cpu/); the sparse cache, training-free, keeps that at
4096, where the decayed state alone loses the far needles (benchmarks/smollm2/recall-cpu/sparse-cache.md). On
SmolLM2-135M this holds 1.1-1.2x the teacher's perplexity at 8x the training length on unseen text, where plain
LoLCATs reaches 3-6x. For a GPU node the same recipe with the GPU
stage defaults (sequences of 1024, LoRA KD at lr 1e-4):

    python cookbook/long_context.py --base meta-llama/Llama-3.2-1B-Instruct --data yahma/alpaca-cleaned --out llama-long
    python cookbook/long_context.py --smoke
"""

from linearize.pipeline import MAIN_RECIPE, main_job, recipe_keep_attention

from smoke import SMOKE, check, recipe_args, tiny_base_dir

if __name__ == "__main__":
    args = recipe_args(__doc__)
    if args.smoke:
        base = tiny_base_dir(layers=5)  # 12/30 of 5 layers kept: 2, and 3 converted
        out = base.parent / "long-context"
        # A window of 4 so the tiny 64-token run reaches the linear part, sinks and decay.
        result = main_job(
            base,
            "lolcats",
            out,
            keep_attention=recipe_keep_attention(5),
            convert_settings={**MAIN_RECIPE, "window": 4, "decay": 16},
            stage_overrides={"transfer": {"lr": 5e-2}, "kd": {"lr": 5e-3}},
            **SMOKE,
        )
        check(result, out)
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(out, trust_remote_code=True)
        assert config.linearize["plan_evidence"]["ranked_by"] == "kl-multikey"
        assert len(config.linearize["keep_attention"]) == 2
        assert all(m is None or (m["sinks"] == 4 and m["decay"] == 16) for m in config.mixers)
        assert all(m is None or m["sparse_cache"] == MAIN_RECIPE["sparse_cache"] for m in config.mixers)
    else:
        from linearize.convert.bases import load_config

        base = args.base or "meta-llama/Llama-3.2-1B-Instruct"
        layers = load_config(base)[1].num_hidden_layers
        main_job(
            base,
            "lolcats",
            args.out or "long-context-out",
            data=args.data,
            keep_attention=recipe_keep_attention(layers),
            convert_settings=dict(MAIN_RECIPE),
        )
