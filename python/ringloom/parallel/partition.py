"""Splitting the block stack into pipeline stages.

A stage is a contiguous run of blocks; the first stage also holds the embedding and the last
the LM head (and, when embeddings are tied, its own copy of wte). With S = pp * chunks
virtual stages, virtual stage s is chunk s // pp of pipeline rank s % pp (round-robin, as in
schedules.py).

``balanced_split`` minimises the largest stage's parameter count (a linear partition solved
exactly by dynamic programming over the n_layer + 1 cut points); ``check_split`` validates an
explicit list of block counts, e.g. [3, 2, 2] for 7 layers on 3 stages.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..models import ModelConfig, param_specs


def _costs(config: ModelConfig) -> tuple[int, list[int], int]:
    """(embedding, [per block], head) parameter counts; a tied head counts its wte copy."""
    emb, head = 0, 0
    blocks = [0] * config.n_layer
    for name, shape, _ in param_specs(config):
        n = int(np.prod(shape))
        if name.startswith("embedding."):
            emb += n
        elif name.startswith("blocks."):
            blocks[int(name.split(".")[1])] += n
        else:
            head += n
    if config.tie_embeddings:
        head += config.vocab_size * config.n_embd
    return emb, blocks, head


def balanced_split(config: ModelConfig, stages: int) -> list[int]:
    """Block counts per stage (each >= 1) minimising the largest stage's parameter count."""
    n = config.n_layer
    if not 1 <= stages <= n:
        raise ValueError(f"cannot split {n} layers into {stages} pipeline stages (each stage needs a layer)")
    emb, blocks, head = _costs(config)
    prefix = np.concatenate([[0], np.cumsum(blocks)])
    INF = float("inf")
    # best[s][i]: smallest max-cost of splitting the first i blocks into s stages.
    best = [[INF] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for s in range(1, stages + 1):
        for i in range(s, n - (stages - s) + 1):
            for j in range(s - 1, i):
                c = prefix[i] - prefix[j] + (emb if s == 1 else 0) + (head if s == stages else 0)
                v = max(best[s - 1][j], c)
                if v < best[s][i]:
                    best[s][i], cut[s][i] = v, j
    counts, i = [], n
    for s in range(stages, 0, -1):
        j = cut[s][i]
        counts.append(i - j)
        i = j
    return counts[::-1]


def check_split(config: ModelConfig, counts: Sequence[int], stages: int) -> list[int]:
    counts = [int(c) for c in counts]
    if len(counts) != stages:
        raise ValueError(f"the stage split {counts} has {len(counts)} entries for {stages} (virtual) stages")
    if any(c < 1 for c in counts):
        raise ValueError(f"the stage split {counts} gives a stage no layers; every stage needs at least one")
    if sum(counts) != config.n_layer:
        raise ValueError(f"the stage split {counts} covers {sum(counts)} layers; the model has {config.n_layer}")
    return counts


def stage_blocks(counts: Sequence[int]) -> list[list[int]]:
    """Block indices of each stage, from the counts."""
    out, start = [], 0
    for c in counts:
        out.append(list(range(start, start + c)))
        start += c
    return out
