"""What a conversion is asked for: the schema the CLI's conversion flags and their help are generated from
(``linearize.flags``), and what ``convert`` takes. A field left None takes the target's default (or, in the main job,
the recipe's: ``linearize.pipeline.MAIN_RECIPE``)."""

from dataclasses import asdict, dataclass, field

# Fields that are not per-mixer settings: the rest go to ``convert(..., **mixer_settings)``.
RUN_FIELDS = ("base", "target", "keep_attention")
# How an auto:N plan ranks layers (``convert`` measures each).
RANKINGS = ("recency", "kl", "kl-recall", "kl-multikey", "kl-mix")


@dataclass
class ConvertSettings:
    base: str = field(
        default=None, metadata={"help": "hub id, local HF directory, or alias (llama = embedded SmolLM2-135M-Instruct)"}
    )
    target: str = field(
        default=None,
        metadata={"flag": "--to", "help": "conversion target: one of linearize.TARGETS (see `linearize convert -h`)"},
    )
    keep_attention: str | None = field(
        default=None,
        metadata={
            "help": "layers that keep softmax attention: '0,5,-1', 'every:K', a fraction '0.25', 'auto:N' (N layers "
            "chosen on calibration text, see --rank-by), or 'none' (convert every layer)"
        },
    )
    feature_dim: int | None = field(default=None, metadata={"help": "feature-map size (default: per target)"})
    window: int | None = field(
        default=None,
        metadata={
            "help": "a softmax window over each query's last N tokens beside the recurrence: lolcats (default 64; "
            "0 = none), linear/t2r/hedgehog/supra/gla/mamba/gdn (default 0)"
        },
    )
    decay: int | None = field(
        default=None,
        metadata={
            "help": "lolcats/linear/t2r/hedgehog: learned per-head decay of the linear state, initial memory span in "
            "tokens (0 = none)"
        },
    )
    sinks: int | None = field(
        default=None,
        metadata={"help": "with a window: the first N tokens stay visible to the window's softmax (attention sinks)"},
    )
    sparse_cache: int | None = field(
        default=None,
        metadata={
            "help": "with a window sharing the normaliser (lolcats): keep N keys per key/value head exact after they "
            "leave the window, those that received the most attention per query that saw them (LoLA's sparse cache; "
            "0 = none)"
        },
    )
    sparse_select: str | None = field(
        default=None,
        metadata={
            "choices": ("error", "attention", "mean"),  # kernels.window_attn.sparse.SELECTIONS (kept light here)
            "help": "with --sparse-cache: the keys it keeps, by the attention they received per query that saw them "
            "(mean, the default), that attention summed (attention), or LoLA's self-recall error (error)",
        },
    )
    rank_by: str | None = field(
        default=None,
        metadata={
            "choices": RANKINGS,
            "help": "auto:N: rank layers by attention recency, or by the KL of converting each alone: over every "
            "token of prose (kl), at the answers of retrieval probes (kl-recall), of probes that also state 3 "
            "distractor facts (kl-multikey), or prose and kl-recall, each as its share of its total (kl-mix)",
        },
    )
    recency_window: int | None = field(
        default=None,
        metadata={"help": "recurformer / auto:N: tokens counted as recent when measuring heads (default 64)"},
    )
    recency_threshold: float | None = field(
        default=None, metadata={"help": "recurformer: heads at or above this recency become Mamba heads (default 0.9)"}
    )
    recency_fraction: float | None = field(
        default=None,
        metadata={"help": "recurformer: convert this share of all heads, most local first (instead of a threshold)"},
    )

    def mixer_settings(self):
        """The settings given (not None) beyond base, target and plan: ``convert``'s keyword arguments."""
        return {k: v for k, v in asdict(self).items() if k not in RUN_FIELDS and v is not None}
