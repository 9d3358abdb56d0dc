"""The main job end to end, small: `ringloom train` on a text file writes the model and
metrics.jsonl, the loss falls, and `ringloom sample` generates from the saved model. Bad
input through the real pipeline gives a one-line CLI error, never a traceback."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ringloom.cli import main


@pytest.fixture
def text_file(tmp_path, rng):
    words = ["def", "return", "self", "import", "class", "for", "in", "if", "else", "(", ")", ":"]
    lines = [" ".join(rng.choice(words, size=8)) for _ in range(600)]
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(lines))
    return str(p)


def _run(args, cache):
    env = dict(os.environ, RINGLOOM_CACHE=str(cache))
    return subprocess.run([sys.executable, "-m", "ringloom", *args], capture_output=True, text=True, env=env,
                          timeout=240)


def test_train_then_sample(tmp_path, text_file):
    out = tmp_path / "run"
    r = _run(["train", "--data", text_file, "--preset", "tiny", "--steps", "40", "--batch-size", "8",
              "--seq-len", "32", "--eval-every", "20", "--log-every", "5", "--sample-len", "20",
              "--out", str(out), "--no-progress", "--seed", "3"], tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-2000:]
    assert {"model.safetensors", "model.json", "metrics.jsonl"} <= set(os.listdir(out))
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [rec["step"] for rec in records if "loss" in rec][:2] == [5, 10]
    for rec in records:
        assert {"step", "loss", "tokens_per_s"} <= set(rec) and rec["tokens_per_s"] > 0
    vals = [rec["val_loss"] for rec in records if rec.get("val_loss") is not None]
    assert len(vals) == 2, "val loss at steps 20 and 40"
    assert records[-1]["loss"] < 0.7 * records[0]["loss"], "training did not reduce the loss"
    assert np.isfinite(vals[-1]) and vals[-1] < np.log(256)

    s = _run(["sample", "--model", str(out), "--prompt", "def ", "--length", "30", "--seed", "1"],
             tmp_path / "cache")
    assert s.returncode == 0, s.stderr[-2000:]
    assert s.stdout.startswith("def ") and len(s.stdout) > len("def ")


@pytest.mark.parametrize("args,message", [
    (["train", "--preset", "gpt5"], "unknown preset 'gpt5'"),
    (["train", "--data", "/nonexistent/x.txt"], "/nonexistent/x.txt"),
    (["train", "--seq-len", "4096"], "exceeds"),
    (["sample", "--model", "/nonexistent/run"], "not found"),
])
def test_bad_input_is_a_clean_cli_error(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setenv("RINGLOOM_CACHE", str(tmp_path / "cache"))
    rc = main(args + (["--out", str(tmp_path / "o")] if args[0] == "train" else []))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and "Traceback" not in err


def test_empty_data_file_is_refused(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    monkeypatch.setenv("RINGLOOM_CACHE", str(tmp_path / "cache"))
    assert main(["train", "--data", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "empty" in capsys.readouterr().err


def test_attention_option_is_validated():
    from ringloom.train.config import TrainConfig

    assert TrainConfig().attention == "auto"
    assert TrainConfig(attention="cudnn").attention == "cudnn"
    with pytest.raises(ValueError, match="attention must be ours, cudnn or auto"):
        TrainConfig(attention="flash")
    assert TrainConfig().deterministic_attention is False
    assert TrainConfig(deterministic_attention=True).deterministic_attention
    with pytest.raises(ValueError, match="--deterministic-attention needs --attention ours or auto"):
        TrainConfig(attention="cudnn", deterministic_attention=True)
