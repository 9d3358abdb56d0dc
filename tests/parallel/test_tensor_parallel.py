"""Tensor parallelism (with sequence parallelism) equals single-process training: for every
layout below, the same global batches from the same initial weights give the same loss at
every step, the same gradients in the first step, the same val loss and the same final
weights as one process training on the whole batch (fp32 rounding: 1e-5 relative, 1e-4
for the weights after AdamW). Each world size
is one launch of tp_worker.py running its configs in turn."""
from __future__ import annotations

import functools
import glob
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BATCH, OPT, VAL_STEPS, global_batch, launched_worlds, tp_model_config  # noqa: E402
from ringloom.models import build_model  # noqa: E402
from ringloom.optim import AdamW  # noqa: E402
from ringloom.parallel.tp_layout import TPLayout, check_tp  # noqa: E402
from ringloom.parallel.tp_traffic import tp_bytes_per_micro_batch  # noqa: E402

pytestmark = pytest.mark.multiproc

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 2
REL = 1e-5      # losses and gradients
# Weights after AdamW: Adam divides each gradient element by its own magnitude, so a
# rounding difference in a near-zero gradient element (LayerNorm biases) becomes a relative
# difference of the same size in its update.
REL_W = 1e-4
SEQ = 12

CONFIGS = {
    2: [dict(name="tp2", dp=1, pp=1, tp=2, micro_batches=2, export_hf=True),
        dict(name="tp2-llama", dp=1, pp=1, tp=2, model=dict(arch="llama"), export_hf=True),
        # Linear biases: their gradients are compared, not the weights after AdamW (the key
        # part of the qkv bias has an exactly zero gradient, pure rounding noise that Adam
        # turns into +-lr steps: common.model_config says more).
        dict(name="tp2-gpt2-bias", dp=1, pp=1, tp=2, model=dict(bias=True, n_layer=2), weights=False)],
    3: [dict(name="tp3", dp=1, pp=1, tp=3),
        dict(name="tp3-llama", dp=1, pp=1, tp=3, model=dict(arch="llama", n_kv_head=3)),
        dict(name="tp3-llama-kv-replicated", dp=1, pp=1, tp=3, model=dict(arch="llama", n_kv_head=1))],
    4: [dict(name="tp2xpp2-1f1b", dp=1, pp=2, tp=2, micro_batches=2),
        dict(name="tp2xpp2-llama-zb-h1", dp=1, pp=2, tp=2, micro_batches=2, schedule="zb-h1",
             model=dict(arch="llama")),
        dict(name="tp2xdp2", dp=2, pp=1, tp=2, micro_batches=2)],
    8: [dict(name="tp2xdp2xpp2", dp=2, pp=2, tp=2, micro_batches=2)],
}
ALL = [(n, c) for n, cs in CONFIGS.items() for c in cs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """world size -> output directory of its launch (launched on first use)."""
    for configs in CONFIGS.values():
        for c in configs:
            c.setdefault("steps", STEPS)
            c.setdefault("seq", SEQ)
    return launched_worlds(tmp_path_factory, os.path.join(HERE, "tp_worker.py"), CONFIGS, timeout=300)


@functools.lru_cache(maxsize=None)
def _reference(model_items: tuple) -> tuple[list[float], dict, dict, float]:
    """One process on the whole batch: losses, the first step's gradients, final weights, val loss."""
    model = build_model(tp_model_config(**dict(model_items)), seed=3)
    opt = AdamW(model.parameters(), **OPT)
    losses, grads = [], {}
    for k in range(STEPS):
        model.zero_grad()
        losses.append(model.forward_backward(*global_batch(k, seq=SEQ)))
        if k == 0:
            grads = {n: np.array(p.grad.numpy(), copy=True) for n, p in model.parameters()}
        opt.step()
    val = float(np.mean([model.loss(*global_batch(j, seq=SEQ)) for j in VAL_STEPS]))
    return losses, grads, model.state_dict(), val


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(np.asarray(b, np.float64)), 1e-30))


@pytest.mark.parametrize("world,cfg", ALL, ids=[c["name"] for _, c in ALL])
def test_matches_single_process(runs, world, cfg):
    out = runs(world)
    ref_losses, ref_g, ref_w, ref_val = _reference(tuple(sorted(cfg.get("model", {}).items())))
    files = sorted(glob.glob(os.path.join(out, f"{cfg['name']}.rank*.npz")))
    assert len(files) == world, files
    seen: dict[str, dict[str, list[np.ndarray]]] = {"param": {}, "grad": {}}
    for f in files:
        d = np.load(f)
        np.testing.assert_allclose(d["losses"], ref_losses, rtol=REL, err_msg=f"{f}: losses per step")
        np.testing.assert_allclose(float(d["val"]), ref_val, rtol=REL, err_msg=f"{f}: val loss")
        for k in d.files:
            kind, _, name = k.partition("/")
            if kind in seen:
                seen[kind].setdefault(name, []).append(d[k])
    kinds = [("param", ref_w, REL_W)] if cfg.get("weights", True) else []
    for kind, ref, tol in kinds + [("grad", ref_g, REL)]:
        assert sorted(seen[kind]) == sorted(ref), f"{kind}s held: {sorted(set(seen[kind]) ^ set(ref))} differ"
        for name, copies in seen[kind].items():
            for c in copies:
                assert c.shape == ref[name].shape, f"{kind} {name}: shape {c.shape} != {ref[name].shape}"
                err = _rel(c, ref[name])
                assert err <= tol, f"{cfg['name']}: {kind} {name} differs from one process by {err:.2e} (relative)"


def test_tp_bytes_match_the_formula(runs):
    """The bytes a tp rank hands to its group per step, counted through the group, equal
    parallel/tp_traffic.py's formula (single-stage runs: embedding, blocks and head on every
    rank; fp32 activations)."""
    for world, name in ((2, "tp2"), (3, "tp3")):
        cfg = next(c for c in CONFIGS[world] if c["name"] == name)
        config = tp_model_config(**cfg.get("model", {}))
        m = cfg.get("micro_batches", 1)
        want = m * tp_bytes_per_micro_batch(config, cfg["tp"], BATCH // m * SEQ, 4, config.n_layer)
        for f in sorted(glob.glob(os.path.join(runs(world), f"{name}.rank*.npz"))):
            got = np.load(f)["tp_bytes"]
            assert list(got) == [want] * STEPS, f"{f}: {list(got)} bytes per step, formula {want}"


@pytest.mark.parametrize("name", ["tp2", "tp2-llama"])
def test_hf_export_from_a_tp_run(runs, name):
    """export_hf on a tensor-parallel model writes the whole model in Hugging Face's layout
    (the same tensors as one process's trained model, converted)."""
    from ringloom.models.hf import read_hf_weights, to_hf

    cfg = next(c for c in CONFIGS[2] if c["name"] == name)
    config = tp_model_config(**cfg.get("model", {}))
    _, _, ref_w, _ = _reference(tuple(sorted(cfg.get("model", {}).items())))
    want = to_hf(ref_w, config)
    for r in range(2):
        got = read_hf_weights(os.path.join(runs(2), f"{name}.hf.rank{r}"))
        assert sorted(got) == sorted(want)
        for k in want:
            assert got[k].shape == want[k].shape, k
            assert _rel(got[k], want[k]) <= REL_W, f"{name}: HF tensor {k} differs"


def test_uneven_head_split_is_refused():
    with pytest.raises(ValueError, match=r"n_head \(4\) is not a multiple of tp \(3\)"):
        check_tp(tp_model_config(n_head=4), 3)
    with pytest.raises(ValueError, match=r"n_kv_head \(2\) and tp \(3\)"):
        check_tp(tp_model_config(arch="llama"), 3)
    with pytest.raises(ValueError, match=r"ffn_hidden \(100\) is not a multiple of tp \(3\)"):
        check_tp(tp_model_config(ffn_hidden=100), 3)
    with pytest.raises(ValueError, match=r"sequence length \(13\) is not a multiple of tp \(2\)"):
        check_tp(tp_model_config(), 2, seq_len=13)


@pytest.mark.parametrize("arch,tp,kv", [("gpt2", 2, None), ("gpt2", 3, None), ("llama", 3, 3), ("llama", 3, 1),
                                        ("llama", 6, 2)])
def test_shards_put_back_together(arch, tp, kv):
    """shard / unshard over all ranks is the identity for every parameter, and the pieces
    of a split parameter are disjoint (their sizes add up, replicated kv heads aside)."""
    over = {} if kv is None else {"n_kv_head": kv}
    config = tp_model_config(arch, **over)
    from ringloom.models import param_specs

    rng = np.random.default_rng(0)
    for name, shape, _ in param_specs(config):
        full = rng.standard_normal(shape).astype(np.float32)
        layouts = [TPLayout(config, tp, r) for r in range(tp)]
        pieces = [L.shard(name, full) for L in layouts]
        np.testing.assert_array_equal(layouts[0].unshard(name, pieces, tuple(shape)), full, err_msg=name)
        if not layouts[0].replicated(name) and not layouts[0].kv_replicated:
            assert sum(p.size for p in pieces) == full.size, name


@pytest.mark.parametrize("dp,pp,tp", [(1, 1, 2), (2, 1, 2), (1, 2, 3), (2, 2, 2), (3, 2, 4)])
def test_mesh_coordinates_tp_innermost(dp, pp, tp):
    from ringloom.parallel import mesh_coord, mesh_rank

    ranks = {mesh_rank(dp, pp, d, s, tp, t) for d in range(dp) for s in range(pp) for t in range(tp)}
    assert ranks == set(range(dp * pp * tp))
    for r in range(dp * pp * tp):
        c = mesh_coord(dp, pp, r, tp)
        assert mesh_rank(dp, pp, c.dp_index, c.pp_index, tp, c.tp_index) == r
        assert c.tp_index == r % tp   # the tp ranks of a stage are consecutive
    with pytest.raises(ValueError, match="outside"):
        mesh_rank(dp, pp, 0, 0, tp, tp)
