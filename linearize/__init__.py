"""linearize: convert pretrained HuggingFace transformers into linear-attention and hybrid models."""

__version__ = "0.1.0"

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM  # noqa: E402

from linearize.convert.configuration_linearized import LinearizedConfig  # noqa: E402
from linearize.convert.modeling_linearized import LinearizedForCausalLM, LinearizedModel  # noqa: E402

# With linearize imported, converted checkpoints load through plain from_pretrained (no remote code).
AutoConfig.register(LinearizedConfig.model_type, LinearizedConfig, exist_ok=True)
AutoModel.register(LinearizedConfig, LinearizedModel, exist_ok=True)
AutoModelForCausalLM.register(LinearizedConfig, LinearizedForCausalLM, exist_ok=True)

from linearize.api import convert, load_base, TARGETS  # noqa: E402

__all__ = ["LinearizedConfig", "LinearizedForCausalLM", "LinearizedModel", "convert", "load_base", "TARGETS"]
