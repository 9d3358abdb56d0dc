"""--on-nonfinite: stop names the step; skip leaves weights and optimizer state untouched and
counts the skipped step."""
from __future__ import annotations

import numpy as np
import pytest

from ringloom import _C
from ringloom.models.model import Model
from ringloom.train.metrics import read_metrics
from ringloom.train.nonfinite import NonFiniteError, step_is_finite
from ringloom.train.trainer import Trainer, run_training


def _poison(monkeypatch, at_call: int, where: str, value: float = np.nan) -> None:
    """The at_call-th forward_backward (1-based) returns a non-finite loss or leaves a
    non-finite value in one gradient element."""
    original = Model.forward_backward
    calls = [0]

    def forward_backward(self, *args, **kw):
        loss = original(self, *args, **kw)
        calls[0] += 1
        if calls[0] != at_call:
            return loss
        if where == "loss":
            return float(value)
        _, p = self.parameters()[3]
        g = np.array(p.grad.numpy(), copy=True)
        g.flat[g.size // 3] = value
        p.grad.copy_(_C.from_numpy(np.ascontiguousarray(g, dtype=np.float32)))
        return loss

    monkeypatch.setattr(Model, "forward_backward", forward_backward)


@pytest.mark.parametrize("where,value,needle", [("loss", np.nan, "loss is nan"),
                                                ("grad", np.inf, "gradient norm is inf"),
                                                ("grad", np.nan, "gradient norm is nan")])
def test_stop_names_the_step(train_config, monkeypatch, where, value, needle):
    _poison(monkeypatch, 4, where, value)
    with pytest.raises(NonFiniteError, match=f"step 4: {needle}.*--on-nonfinite skip"):
        run_training(train_config())


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_skip_leaves_state_untouched(train_config, monkeypatch, where):
    tr = Trainer(train_config(on_nonfinite="skip"))
    tr.train_step()
    tr.train_step()
    weights, opt = tr.engine.model.state_dict(), tr.engine.optimizer.state_dict()
    _poison(monkeypatch, 1, where)
    tr.train_step()  # step 3: skipped
    assert tr.step == 3 and tr.skipped_steps == 1 and tr.engine.optimizer.step_count == 2
    after_w, after_o = tr.engine.model.state_dict(), tr.engine.optimizer.state_dict()
    for k in weights:
        assert np.array_equal(weights[k], after_w[k]), k
    for k in opt:
        assert np.array_equal(opt[k], after_o[k]), k
    tr.train_step()  # step 4 updates again
    assert tr.engine.optimizer.step_count == 3
    assert not np.array_equal(weights["embedding.wte.weight"], tr.engine.model.state_dict()["embedding.wte.weight"])


def test_skip_is_counted_in_metrics(train_config, monkeypatch):
    _poison(monkeypatch, 3, "loss")
    cfg = train_config(on_nonfinite="skip", steps=5)
    summary = run_training(cfg)
    records = read_metrics(cfg.out)
    assert summary["skipped_steps"] == 1
    assert [r["skipped_steps"] for r in records] == [0, 0, 1, 1, 1]
    assert records[2]["loss"] is None  # the NaN loss, written as null
    assert all(np.isfinite(r["loss"]) for r in records if r["step"] != 3)


def test_policy_validation():
    assert step_is_finite(1.0, 2.0, 1, "anything")  # finite: no policy consulted
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        step_is_finite(float("nan"), 1.0, 1, "ignore")
    from ringloom.train.config import TrainConfig
    with pytest.raises(ValueError, match="on_nonfinite must be stop or skip, got 'warn'"):
        TrainConfig(on_nonfinite="warn")


def test_parallel_engine_skips_before_the_update(train_config, monkeypatch):
    """With micro-batches the trainer runs the parallel engine (here on one process): a
    non-finite gradient is caught after the gradient sync and before the optimizer, so
    skip leaves every weight and moment as it was, and stop names the step."""
    tr = Trainer(train_config(on_nonfinite="skip", micro_batches=2, batch_size=4))
    engine = tr.engine.parallel   # the MeshEngine's ringloom.parallel.ParallelEngine
    tr.train_step()
    weights = engine.gather_full_state()
    original = engine._grad_norm
    calls = [0]

    def poisoned():
        # An inf lands in one gradient after the sync, as an overflow in backward would.
        calls[0] += 1
        if calls[0] == 1:
            _, p = engine.named[3]
            g = np.array(p.grad.numpy(), copy=True)
            g.flat[0] = np.inf
            p.grad.copy_(_C.from_numpy(np.ascontiguousarray(g, dtype=np.float32)))
        return original()

    monkeypatch.setattr(engine, "_grad_norm", poisoned)
    tr.train_step()  # step 2: skipped
    assert tr.step == 2 and tr.skipped_steps == 1 and engine.last_step_skipped
    after = engine.gather_full_state()
    for k in weights:
        assert np.array_equal(weights[k], after[k]), k
    calls[0] = 0
    tr.cfg.on_nonfinite = "stop"
    with pytest.raises(NonFiniteError, match="step 3: gradient norm is inf"):
        tr.train_step()
