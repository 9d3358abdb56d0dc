"""Tensor-parallel runs from the command line: `--tp 2` trains like one process, its
checkpoints hold full (layout-free) tensors, a tp=2 checkpoint resumes at tp=1 and a tp=1
checkpoint at tp=2 to the same result within fp32 rounding, a tp=2 resume at tp=2 is bit
exact, and the model written at the end (`--out`) is the whole model."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_checkpoint_parallel import _losses, _resume_from, _step, _train  # noqa: E402

from ringloom.checkpoint import load_safetensors  # noqa: E402
from ringloom.models import get_preset, param_specs  # noqa: E402

pytestmark = pytest.mark.multiproc


def _close(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Weights after AdamW agree to 1e-4 of their norm: Adam divides each gradient element
    by its own magnitude, so the rounding of a near-zero element shows in its update."""
    err = np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(np.asarray(b, np.float64)), 1e-30)
    assert err <= 1e-4, f"{what}: relative difference {err:.2e}"

TP2 = ["--tp", "2", "--micro-batches", "2"]
LLAMA_TP2 = ["--preset", "llama-tiny", "--tp", "2", "--micro-batches", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> --out of an uninterrupted 4-step run (launched on first use)."""
    layouts = {"tp2": (TP2, 2), "single": (["--micro-batches", "2"], 1)}
    done: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in done:
            out = str(tmp_path_factory.mktemp(name) / "run")
            layout, n = layouts[name]
            _train(out, layout, n=n)
            done[name] = out
        return done[name]
    return get


def test_tp2_checkpoint_is_whole_and_matches_one_process(runs):
    tp2, single = runs("tp2"), runs("single")
    want, got = _losses(single), _losses(tp2)
    assert sorted(got) == [1, 2, 3, 4]
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-5)
    ck = _step(tp2, 2)
    assert ck.config["layout"] == {"world_size": 2, "dp": 1, "pp": 1, "tp": 2}
    weights, opt = ck.model_state(), ck.optim_state()
    specs = {n: tuple(s) for n, s, _ in param_specs(get_preset("tiny", vocab_size=256))}
    assert {n: w.shape for n, w in weights.items()} == specs
    assert set(opt) == {"step"} | {f"{k}.{n}" for n in specs for k in ("m", "v")}
    assert all(opt[f"v.{n}"].shape == s for n, s in specs.items())
    # tp rank 1 holds the same tensors (gathered) and writes none of them.
    assert "model.rank00001.safetensors" not in ck.manifest["files"]
    ref = _step(single, 2).model_state()
    for n in specs:
        _close(weights[n], ref[n], n)
    # The model written at the end is the whole model.
    final, _ = load_safetensors(os.path.join(tp2, "model.safetensors"))
    assert {n: w.shape for n, w in final.items()} == specs


@pytest.mark.parametrize("src,layout,n", [("tp2", ["--micro-batches", "2"], 1), ("single", TP2, 2),
                                          ("tp2", TP2, 2)], ids=["tp2-to-tp1", "tp1-to-tp2", "tp2-to-tp2"])
def test_resume_across_tp(runs, tmp_path, src, layout, n):
    base = runs(src)
    out = str(tmp_path / "resumed")
    _resume_from(_step(base, 2).path, out)
    _train(out, layout, "--resume", n=n)
    want, got = _losses(base), _losses(out)
    assert sorted(got) == [3, 4]
    a, b = _step(base, 4).model_state(), _step(out, 4).model_state()
    if src == "tp2" and n == 2:   # the same layout: bit for bit
        assert [got[s] for s in (3, 4)] == [want[s] for s in (3, 4)]
        for k in a:
            assert np.array_equal(a[k], b[k]), k
        return
    np.testing.assert_allclose([got[s] for s in (3, 4)], [want[s] for s in (3, 4)], rtol=1e-5)
    for k in a:
        _close(b[k], a[k], k)


def test_llama_tp2_trains(tmp_path):
    """LLaMA (RMSNorm, SwiGLU, RoPE, GQA: 4 query heads, 2 kv heads) at tp=2 from the CLI."""
    out = str(tmp_path / "llama")
    _train(out, LLAMA_TP2, n=2)
    got = _losses(out)
    assert sorted(got) == [1, 2, 3, 4] and all(np.isfinite(v) for v in got.values())
    assert got[4] < got[1]
