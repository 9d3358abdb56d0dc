"""Tensor parallelism on the GPU matches one GPU: the trainer's CLI with --tp 2 and
--tp 2 --pp 2 (CUDA tensors, bf16 compute, vocabulary-parallel head) logs the same losses
and gradient norms as a single-GPU run of the same global batch, within the bf16 tolerance
of tests/tolerances.py, for GPT-2 and LLaMA (GQA) presets.

Runs wherever one GPU is visible: the ranks share it as clients of the CUDA Multi-Process
Service (the `mps` fixture, through gpu_ranks.ranks_on_gpus), with our collectives
(`--backend ring`), as in test_parallel_gpu.py.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gpu_ranks import ranks_on_gpus
from test_parallel_gpu import BF16_REL, _run

pytestmark = [pytest.mark.gpu, pytest.mark.multiproc]


def _records(out: str) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "loss" in r]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """preset -> the losses of a single-GPU run."""
    done: dict[str, list[dict]] = {}

    def get(preset: str) -> list[dict]:
        if preset not in done:
            out = str(tmp_path_factory.mktemp(f"single-{preset}") / "run")
            _run(1, ["--preset", preset, "--device", "cuda"], out)
            done[preset] = _records(out)
        return done[preset]
    return get


@pytest.mark.parametrize("preset,n,args", [
    ("tiny", 2, ["--tp", "2"]),
    ("llama-tiny", 2, ["--tp", "2"]),
    ("tiny", 4, ["--tp", "2", "--pp", "2", "--schedule", "1f1b", "--micro-batches", "2"]),
    ("llama-tiny", 4, ["--tp", "2", "--pp", "2", "--schedule", "zb", "--micro-batches", "2"]),
], ids=["tp2", "tp2-llama", "tp2xpp2-1f1b", "tp2xpp2-llama-zb"])
def test_tp_layouts_match_one_gpu(request, single, tmp_path, preset, n, args):
    ref_records = single(preset)
    out = str(tmp_path / "run")
    _run(n, ["--preset", preset, *args, "--backend", "ring", "--device", "cuda"], out, ranks_on_gpus(n, request))
    got = _records(out)
    assert [r["step"] for r in got] == [r["step"] for r in ref_records]
    ref = np.array([r["loss"] for r in ref_records])
    assert ref[-1] < ref[0], "the reference did not train: the comparison would prove little"
    loss = np.array([r["loss"] for r in got])
    assert np.all(np.isfinite(loss))
    np.testing.assert_allclose(loss, ref, rtol=BF16_REL, err_msg="losses differ from one GPU")
    np.testing.assert_allclose([r["grad_norm"] for r in got], [r["grad_norm"] for r in ref_records],
                               rtol=5 * BF16_REL, err_msg="gradient norms differ from one GPU")
