"""Golden runs: bit-stable on the CPU, and a change that moves the model (a weight, the
learning rate, a loss at one step) fails with the step and the size of the difference."""
import json
import warnings

import numpy as np
import pytest

from ringloom.models import build_model, get_preset
from ringloom.testing import SpeedWarning, golden_run

CFG = get_preset("llama-tiny", n_layer=2, n_embd=32, n_head=4, n_kv_head=2, ffn_hidden=48, vocab_size=41,
                 max_seq_len=16)
RUN = dict(steps=6, seed=3, batch_size=3, seq_len=9)


def test_golden_run_is_bit_stable_and_round_trips(tmp_path):
    path = tmp_path / "golden.json"
    first = golden_run(CFG, golden=path, update=True, **RUN)
    assert first.updated and path.exists()
    second = golden_run(CFG, golden=path, **RUN)               # compares: raises on a mismatch
    assert not second.updated
    assert second.losses == first.losses                       # bit-equal, not only within tolerance
    assert second.grad_norms == first.grad_norms
    assert second.weights["sha256"] == first.weights["sha256"]
    assert first.losses[-1] < first.losses[0]                  # it trained
    record = json.loads(path.read_text())
    assert record["losses"] == first.losses and record["run"]["seed"] == 3


def test_changed_weight_is_caught_at_step_zero(tmp_path):
    path = tmp_path / "golden.json"
    golden_run(CFG, golden=path, update=True, **RUN)

    def changed(config, **kw):
        model = build_model(config, **kw)
        state = model.state_dict()
        state["blocks.0.attn.proj.weight"] *= 1.05
        model.load_state_dict(state)
        return model

    with pytest.raises(AssertionError, match=r"diverges at step 0: (loss|gradient norm) .*relative difference"):
        golden_run(CFG, golden=path, model_fn=changed, **RUN)


def test_first_diverging_step_is_reported(tmp_path):
    path = tmp_path / "golden.json"
    golden_run(CFG, golden=path, update=True, **RUN)
    record = json.loads(path.read_text())
    record["grad_norms"][4] *= 1.01
    path.write_text(json.dumps(record))
    with pytest.raises(AssertionError, match=r"diverges at step 4: gradient norm .* \(relative difference 9\.9\de-03"):
        golden_run(CFG, golden=path, **RUN)


def test_final_weights_compared(tmp_path):
    path = tmp_path / "golden.json"
    golden_run(CFG, golden=path, update=True, **RUN)
    record = json.loads(path.read_text())
    record["weights"]["sha256"] = "0" * 64
    record["weights"]["tensors"]["head.norm.weight"][0] *= 1.001
    path.write_text(json.dumps(record))
    with pytest.raises(AssertionError, match="final weights differ, most in head.norm.weight"):
        golden_run(CFG, golden=path, **RUN)


def test_other_settings_and_missing_file(tmp_path):
    path = tmp_path / "golden.json"
    with pytest.raises(AssertionError, match="does not exist: run once with update=True"):
        golden_run(CFG, golden=path, **RUN)
    golden_run(CFG, golden=path, update=True, **RUN)
    with pytest.raises(AssertionError, match="another run .*lr: golden 0.003, this run 0.001"):
        golden_run(CFG, golden=path, lr=1e-3, **RUN)
    with pytest.raises(AssertionError, match="another config .*n_layer"):
        golden_run(get_preset("llama-tiny", n_layer=1, n_embd=32, n_head=4, n_kv_head=2, ffn_hidden=48,
                              vocab_size=41, max_seq_len=16), golden=path, **RUN)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        golden_run(CFG, golden=path, steps=0, seed=0)


def test_data_stream_and_speed_warning(tmp_path):
    path = tmp_path / "golden.json"
    data = np.random.default_rng(0).integers(0, CFG.vocab_size, 500)
    golden_run(CFG, golden=path, update=True, data=data, **RUN)
    record = json.loads(path.read_text())
    (name, speed), = record["speed"].items()
    assert speed > 0
    record["speed"][name] = speed * 1000
    path.write_text(json.dumps(record))
    with pytest.warns(SpeedWarning, match="tokens/s"):
        golden_run(CFG, golden=path, data=data, **RUN)
    with pytest.raises(AssertionError, match="another run .*data"):
        golden_run(CFG, golden=path, data=data[::-1].copy(), **RUN)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpeedWarning)
        record["speed"][name] = speed / 1000                   # faster than recorded: no warning
        path.write_text(json.dumps(record))
        golden_run(CFG, golden=path, data=data, **RUN)


@pytest.mark.gpu
def test_golden_run_on_gpu(tmp_path):
    path = tmp_path / "golden.json"
    first = golden_run(CFG, golden=path, update=True, device="cuda", **RUN)
    golden_run(CFG, golden=path, device="cuda", **RUN)
    assert json.loads(path.read_text())["device"] == "cuda/bfloat16"
    assert first.losses[-1] < first.losses[0]
