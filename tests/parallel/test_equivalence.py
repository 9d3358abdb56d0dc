"""Parallel training equals single-process training: for every layout below, k steps from
the same initial weights on the same global batches give the same loss at every step, the
same val loss and the same final weights as one process training on the whole batch
(fp32, 1e-5 relative). Each world size is one launch of worker.py running its configs in
turn (process start-up is most of the cost on a 2-core CI machine)."""
from __future__ import annotations

import functools
import glob
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import launched_worlds, reference_run  # noqa: E402

pytestmark = pytest.mark.multiproc

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 3
REL = 1e-5

CONFIGS = {
    2: [dict(name="dp2", dp=2, pp=1, micro_batches=3),
        dict(name="dp2-zero", dp=2, pp=1, micro_batches=2, zero=True),
        *[dict(name=f"pp2-{s}", dp=1, pp=2, micro_batches=4, schedule=s) for s in ("gpipe", "1f1b", "interleaved",
                                                                                   "zb-h1")],
        dict(name="pp2-llama-zb-h1", dp=1, pp=2, micro_batches=3, schedule="zb-h1", arch="llama"),
        dict(name="pp2-zb-h1-recompute-full", dp=1, pp=2, micro_batches=3, schedule="zb-h1", recompute="full"),
        dict(name="dp2-zero2", dp=2, pp=1, micro_batches=2, zero=2),
        dict(name="dp2-zero3", dp=2, pp=1, micro_batches=1, zero=3),
        dict(name="dp2-zero3-llama-selective", dp=2, pp=1, micro_batches=2, zero=3, arch="llama",
             recompute="selective")],
    3: [dict(name="dp3", dp=3, pp=1, micro_batches=2),
        dict(name="pp3-uneven-1f1b", dp=1, pp=3, micro_batches=3, n_layer=7, stage_layers=[3, 2, 2]),
        dict(name="pp3-zb-h1", dp=1, pp=3, micro_batches=4, n_layer=7, schedule="zb-h1"),
        dict(name="dp3-zero2", dp=3, pp=1, micro_batches=2, zero=2),
        dict(name="dp3-zero3", dp=3, pp=1, micro_batches=2, zero=3, n_layer=3)],
    4: [dict(name="dp2xpp2-1f1b", dp=2, pp=2, micro_batches=3),
        dict(name="dp2xpp2-zero-interleaved", dp=2, pp=2, micro_batches=2, schedule="interleaved", zero=True),
        dict(name="dp4-zero3", dp=4, pp=1, micro_batches=1, zero=3),
        dict(name="dp2xpp2-zero3-zb-h1", dp=2, pp=2, micro_batches=2, schedule="zb-h1", zero=3),
        dict(name="dp2xpp2-zero2-1f1b-llama", dp=2, pp=2, micro_batches=3, zero=2, arch="llama")],
}
ALL = [(n, c) for n, cs in CONFIGS.items() for c in cs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """world size -> output directory of its launch (launched on first use)."""
    for configs in CONFIGS.values():
        for c in configs:
            c.setdefault("steps", STEPS)
    return launched_worlds(tmp_path_factory, os.path.join(HERE, "worker.py"), CONFIGS, timeout=180)


@functools.lru_cache(maxsize=None)
def _reference(arch: str, n_layer: int):
    return reference_run(arch, n_layer, STEPS)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(np.asarray(b, np.float64)), 1e-30))


@pytest.mark.parametrize("world,cfg", ALL, ids=[c["name"] for _, c in ALL])
def test_matches_single_process(runs, world, cfg):
    out = runs(world)
    ref_losses, ref_w, ref_val = _reference(cfg.get("arch", "gpt2"), cfg.get("n_layer", 4))
    files = sorted(glob.glob(os.path.join(out, f"{cfg['name']}.rank*.npz")))
    assert len(files) == world, files
    seen: dict[str, list[np.ndarray]] = {}
    for f in files:
        d = np.load(f)
        losses = d["losses"]
        assert losses.shape == (STEPS,)
        np.testing.assert_allclose(losses, ref_losses, rtol=REL, err_msg=f"{f}: losses per step")
        np.testing.assert_allclose(float(d["val"]), ref_val, rtol=REL, err_msg=f"{f}: val loss")
        for k in d.files:
            if k.startswith("param/"):
                seen.setdefault(k[6:], []).append(d[k])
    # Every parameter is held somewhere, and each copy equals the reference.
    assert sorted(seen) == sorted(ref_w), f"parameters held: {sorted(set(seen) ^ set(ref_w))} differ"
    for name, copies in seen.items():
        for c in copies:
            assert c.shape == ref_w[name].shape
            assert np.isfinite(c).all()
            err = _rel(c, ref_w[name])
            assert err <= REL, f"{cfg['name']}: {name} differs from single-process training by {err:.2e} (relative)"
        for c in copies[1:]:
            # Replicas (dp ranks, the tied wte copies) are bit-identical, not merely close.
            assert np.array_equal(c, copies[0]), f"{cfg['name']}: copies of {name} diverged"


@pytest.mark.parametrize("world", sorted(CONFIGS))
def test_val_loss_agrees(runs, world):
    """Every rank reports the same val loss (it is reduced over the whole world)."""
    out = runs(world)
    for c in CONFIGS[world]:
        per_rank = [float(np.load(f)["val"]) for f in sorted(glob.glob(os.path.join(out, f"{c['name']}.rank*.npz")))]
        assert len(set(per_rank)) == 1, f"{c['name']}: ranks disagree on val loss {per_rank}"


ZERO_DP = [(w, c) for w, c in ALL if c.get("zero", 0) >= 2 and c["pp"] == 1]


@pytest.mark.parametrize("world,cfg", ZERO_DP, ids=[c["name"] for _, c in ZERO_DP])
def test_zero_memory_per_rank(runs, world, cfg):
    """After a step each rank holds its shard of the gradients (ZeRO-2) and of the weights
    too (ZeRO-3), not whole copies: at most 1/dp of the elements plus the padding of one
    bucket per layer."""
    out = runs(world)
    ref_w = _reference(cfg.get("arch", "gpt2"), cfg.get("n_layer", 4))[1]
    n = sum(w.size for w in ref_w.values())
    slack = 4 * cfg["dp"] * (cfg.get("n_layer", 4) + 2)   # < dp padding elements per bucket, fp32
    for f in sorted(glob.glob(os.path.join(out, f"{cfg['name']}.rank*.npz"))):
        mem = json.loads(str(np.load(f)["memory"]))
        share = 4 * n / cfg["dp"]
        assert share * 0.9 <= mem["grads"] <= share + slack, (f, mem, share)
        assert 3 * share * 0.9 <= mem["optimizer"] <= 3 * (share + slack), (f, mem, share)
        if cfg["zero"] == 3:
            assert mem["params"] == 0, (f, mem)   # between steps no layer is gathered
        else:
            assert mem["params"] == 4 * n, (f, mem)
