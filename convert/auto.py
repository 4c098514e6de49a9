"""Registers converted checkpoints with transformers' Auto classes, so that plain ``from_pretrained(folder)``
loads them without remote code. Imported wherever linearize builds or loads a converted model (and by
``linearize.LinearizedForCausalLM``), not by ``import linearize``, which stays light."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from linearize.convert.configuration_linearized import LinearizedConfig
from linearize.convert.modeling_linearized import LinearizedForCausalLM, LinearizedModel

AutoConfig.register(LinearizedConfig.model_type, LinearizedConfig, exist_ok=True)
AutoModel.register(LinearizedConfig, LinearizedModel, exist_ok=True)
AutoModelForCausalLM.register(LinearizedConfig, LinearizedForCausalLM, exist_ok=True)

__all__ = ["LinearizedConfig", "LinearizedForCausalLM", "LinearizedModel"]
