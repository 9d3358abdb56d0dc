"""Text generation from a trained model: temperature and top-k sampling."""
from __future__ import annotations

from typing import Any

import numpy as np


def sample_next(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    """Draws one token id from logits [V] (float64 softmax of logits/temperature, restricted
    to the top_k largest when top_k > 0). temperature <= 0 means greedy."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits / temperature
    if 0 < top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= kth, z, -np.inf)
    z = z - z.max()
    p = np.exp(z)
    p /= p.sum()
    return int(rng.choice(z.size, p=p))


def generate(model: Any, prompt_ids: np.ndarray, length: int, temperature: float = 0.8, top_k: int = 40,
             seed: int = 0) -> np.ndarray:
    """Extends prompt_ids by `length` tokens. Each step runs the model on the last
    max_seq_len tokens (no KV cache: fine for the small models this is used with)."""
    rng = np.random.default_rng(seed)
    ids = [int(t) for t in np.asarray(prompt_ids).reshape(-1)]
    if not ids:
        raise ValueError("generate: the prompt must contain at least one token")
    ctx = model.config.max_seq_len
    vocab = model.config.vocab_size
    for _ in range(length):
        window = np.asarray(ids[-ctx:], dtype=np.int32)[None, :]
        logits = np.asarray(model.logits(window).numpy(), dtype=np.float32)[0, -1, :vocab]
        ids.append(sample_next(logits, temperature, top_k, rng))
    return np.asarray(ids, dtype=np.int32)


def sample_from_dir(args: Any) -> int:
    """`ringloom sample`: load the model saved by `ringloom train --out DIR` and print a sample."""
    from ..data import load_tokenizer
    from .model_io import load_model

    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("--prompt is not valid UTF-8 text (it holds undecodable bytes)") from None
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be an integer >= 0, got {args.seed}")
    model, meta = load_model(args.model, device=getattr(args, "device", "cpu") or "cpu")
    tok = load_tokenizer(meta["tokenizer"])
    prompt = args.prompt if args.prompt else "\n"
    ids = tok.encode(prompt)
    out = generate(model, ids, args.length, args.temperature, args.top_k, args.seed)
    print(tok.decode(out))
    return 0
