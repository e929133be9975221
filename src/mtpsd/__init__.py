"""mtpsd: multi-token prediction via online self-distillation.

Reproduction of Kirchenbauer et al. (2026), "Multi-Token Prediction via
Self-Distillation", and a toolkit to apply it to any Hugging Face causal LM.
"""

__version__ = "0.1.0"
