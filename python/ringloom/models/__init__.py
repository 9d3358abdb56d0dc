"""GPT-2 and LLaMA models built from ringloom's layers.

    from ringloom.models import get_preset, build_model
    model = build_model(get_preset("tiny"), device="cpu", seed=0)
    loss = model.forward_backward(ids, targets)        # ids, targets: int [B, T]
"""
from .config import ARCHS, PRESETS, ModelConfig, get_preset
from .init import param_specs
from .model import Model, PendingLoss, build_model

__all__ = ["ARCHS", "PRESETS", "ModelConfig", "get_preset", "param_specs", "Model", "PendingLoss", "build_model"]
