"""A small training setup shared by the trainer tests: a text file of random words and a
TrainConfig that trains the tiny preset on it in well under a second per step."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    rng = np.random.default_rng(2024)
    words = ["alpha", "beta", "gamma", "delta", "loom", "ring", "thread", "weave", "\n", "of", "the"]
    path = tmp_path_factory.mktemp("text") / "words.txt"
    path.write_text(" ".join(words[i] for i in rng.integers(0, len(words), 6000)))
    return str(path)


@pytest.fixture
def train_config(text_file, tmp_path):
    from ringloom.train.config import TrainConfig

    def make(**overrides):
        kw = dict(data=[text_file], preset="tiny", steps=7, batch_size=3, seq_len=13, warmup=2, lr=3e-3,
                  eval_every=0, eval_batches=1, log_every=1, sample_len=0, progress=False,
                  out=str(tmp_path / "run"), seed=11, threads=1)  # fixed: results may depend on it
        kw.update(overrides)
        return TrainConfig(**kw)

    return make
