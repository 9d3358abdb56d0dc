"""Saving a trained model for `ringloom sample` and other tools: DIR/model.safetensors
(weights, by parameter name, fp32) and DIR/model.json (model config and tokenizer spec)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

from ..checkpoint import atomic_write_text, load_safetensors, save_safetensors
from ..checkpoint.safe_files import member_path, open_regular, read_bounded


def save_model(model: Any, out_dir: str, tokenizer_spec: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    spec = tokenizer_spec
    if spec.startswith("bpe:"):
        # Keep the tokenizer next to the weights so the directory is self-contained.
        src = spec[4:]
        dst = os.path.join(out_dir, "tokenizer.json")
        if os.path.abspath(src) != os.path.abspath(dst):
            shutil.copyfile(src, dst)
        spec = "bpe:tokenizer.json"
    save_safetensors(os.path.join(out_dir, "model.safetensors"), model.state_dict(),
                     metadata={"format": "ringloom", "arch": model.config.arch})
    meta = {"config": dataclasses.asdict(model.config), "tokenizer": spec}
    atomic_write_text(os.path.join(out_dir, "model.json"), json.dumps(meta, indent=2))


def load_model(model_dir: str, device: str = "cpu") -> tuple[Any, dict]:
    """The model saved by :func:`save_model` and its model.json. A model.json that is not an
    object, lacks ``config`` or ``tokenizer``, holds an unknown or mistyped config field, or
    names a tokenizer file outside ``model_dir`` is a ValueError naming the file."""
    from ..models import ModelConfig, build_model

    meta_path = os.path.join(model_dir, "model.json")
    weights = os.path.join(model_dir, "model.safetensors")
    for p in (meta_path, weights):
        if not os.path.exists(p):
            raise FileNotFoundError(f"{p} not found: is {model_dir!r} the --out directory of `ringloom train`?")
    try:
        meta = json.loads(read_bounded(meta_path, 16 << 20))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) \
            or not isinstance(meta.get("tokenizer"), str):
        raise ValueError(f"{meta_path}: expected an object with a 'config' object and a 'tokenizer' string")
    try:
        config = ModelConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{meta_path}: bad model config: {e}") from None
    model = build_model(config, device=device)
    state, _ = load_safetensors(weights)
    model.load_state_dict(state)
    if meta["tokenizer"].startswith("bpe:"):
        # The tokenizer travels with the weights (save_model): it must lie in model_dir.
        path = member_path(model_dir, meta["tokenizer"][4:], meta_path)
        open_regular(path, meta_path).close()   # a regular file, not a link out of model_dir
        meta["tokenizer"] = "bpe:" + path
    return model, meta
