"""The ringloom CLI: arguments reach the job unchanged, bad arguments and user errors give a
one-line error and exit code 2 (no traceback). The train/sample/launch back ends are replaced
by recorders, so these tests need neither models nor processes."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import types

import pytest

from ringloom.cli import main


@pytest.fixture
def fake(monkeypatch):
    """Install recording stand-ins for the lazily imported back ends."""
    calls = {}

    def recorder(name, result=0, raises=None):
        def fn(arg):
            calls[name] = arg
            if raises is not None:
                raise raises
            return result
        return fn

    def install(module, attr, **kw):
        mod = types.ModuleType(module)
        setattr(mod, attr, recorder(attr, **kw))
        monkeypatch.setitem(sys.modules, module, mod)

    install("ringloom.train.trainer", "run_training")
    install("ringloom.train.sampling", "sample_from_dir")
    install("ringloom.launch", "main")
    calls["install"] = install
    return calls


def test_train_defaults(fake):
    assert main(["train"]) == 0
    a = fake["run_training"]
    assert a.command == "train" and a.preset == "tiny" and a.out == "runs/tiny"
    assert a.data is None and a.tokenizer == "byte" and a.device == "cpu"
    assert a.resume is None and a.dp is None and a.pp == 1


def test_train_arguments_forwarded(fake, tmp_path):
    argv = ["train", "--preset", "gpt2-124m", "--steps", "17", "--batch-size", "12",
            "--seq-len", "33", "--lr", "6e-4", "--min-lr", "6e-5", "--warmup", "3",
            "--weight-decay", "0.05", "--grad-clip", "0.5", "--seed", "7", "--eval-every", "5",
            "--eval-batches", "2", "--device", "cuda:1", "--dtype", "bfloat16",
            "--out", str(tmp_path), "--data", "a.txt", "b/", "--tokenizer", "bpe-train:512",
            "--sample-every", "4", "--sample-len", "64", "--temperature", "0.7", "--top-k", "9",
            "--log-every", "2", "--dp", "3", "--pp", "2", "--schedule", "gpipe",
            "--micro-batches", "4", "--save-every", "8", "--resume", "--no-progress"]
    assert main(argv) == 0
    a = fake["run_training"]
    got = {k: getattr(a, k) for k in (
        "preset", "steps", "batch_size", "seq_len", "lr", "min_lr", "warmup", "weight_decay",
        "grad_clip", "seed", "eval_every", "eval_batches", "device", "dtype", "out", "data",
        "tokenizer", "sample_every", "sample_len", "temperature", "top_k", "log_every", "dp",
        "pp", "schedule", "micro_batches", "save_every", "resume", "no_progress")}
    assert got == dict(
        preset="gpt2-124m", steps=17, batch_size=12, seq_len=33, lr=6e-4, min_lr=6e-5, warmup=3,
        weight_decay=0.05, grad_clip=0.5, seed=7, eval_every=5, eval_batches=2, device="cuda:1",
        dtype="bfloat16", out=str(tmp_path), data=["a.txt", "b/"], tokenizer="bpe-train:512",
        sample_every=4, sample_len=64, temperature=0.7, top_k=9, log_every=2, dp=3, pp=2,
        schedule="gpipe", micro_batches=4, save_every=8, resume="latest", no_progress=True)


def test_train_return_code_passes_through(fake):
    fake["install"]("ringloom.train.trainer", "run_training", result=3)
    assert main(["train"]) == 3


@pytest.mark.parametrize("argv,needle", [
    (["--steps", "0"], "--steps: must be at least 1, got 0"),
    (["--batch-size", "x"], "--batch-size: expected an integer, got 'x'"),
    (["--lr", "0"], "--lr: must be > 0.0"),
    (["--seed", "-1"], "--seed: must be at least 0, got -1"),
    (["--local-sgd", "-3"], "--local-sgd: must be at least 0, got -3"),
    (["--lr", "nan"], "--lr: must be a finite number, got nan"),
    (["--lr", "inf"], "--lr: must be a finite number, got inf"),
    (["--weight-decay=-inf"], "--weight-decay: must be a finite number"),
    (["--grad-clip", "1e999"], "--grad-clip: must be a finite number"),
    (["--bucket-mb", "inf"], "--bucket-mb: must be a finite number"),
    (["--temperature", "nan"], "--temperature: must be a finite number"),
    (["--device", "gpu"], "--device: expected cpu, cuda or cuda:N, got 'gpu'"),
    (["--dtype", "float64"], "invalid choice: 'float64'"),
    (["--tokenizer", "sentencepiece"], "--tokenizer: expected byte, bpe:PATH"),
    (["--tokenizer", "bpe-train:100"], "VOCAB must be at least 257"),
    (["--batch-size", "10", "--dp", "3"], "--batch-size 10 is not divisible by --dp 3"),
    (["--batch-size", "12", "--dp", "2", "--micro-batches", "4"],
     "per-rank batch 6 (--batch-size / --dp) is not divisible by --micro-batches 4"),
    (["--lr", "1e-3", "--min-lr", "1e-2"], "--min-lr 0.01 is larger than --lr 0.001"),
    (["--val-fraction", "0.9"], "--val-fraction: must be"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_train_bad_arguments(fake, capsys, argv, needle):
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert "ringloom train: error:" in err and needle in err
    assert "run_training" not in fake


@pytest.mark.parametrize("exc", [
    ValueError("unknown preset 'huge': choose one of tiny, gpt2-124m"),
    FileNotFoundError("data path not found: /nope"),
])
def test_user_errors_from_the_job(fake, capsys, exc):
    fake["install"]("ringloom.train.trainer", "run_training", raises=exc)
    assert main(["train", "--preset", "huge"]) == 2
    err = capsys.readouterr().err
    assert err == f"ringloom train: error: {exc}\n"
    assert "Traceback" not in err


def test_multiline_error_is_one_line(fake, capsys):
    fake["install"]("ringloom.train.trainer", "run_training", raises=ValueError("a\nb"))
    assert main(["train"]) == 2
    assert capsys.readouterr().err == "ringloom train: error: a b\n"


def test_unexpected_errors_are_one_line(fake, capsys, monkeypatch):
    monkeypatch.delenv("RINGLOOM_DEBUG", raising=False)
    fake["install"]("ringloom.train.trainer", "run_training", raises=RuntimeError("bug\nin two lines"))
    assert main(["train"]) == 1
    err = capsys.readouterr().err
    assert err == ("ringloom train: internal error: RuntimeError: bug in two lines (set RINGLOOM_DEBUG=1 for "
                   "the traceback)\n")


def test_bugs_are_not_hidden_with_debug(fake, monkeypatch):
    monkeypatch.setenv("RINGLOOM_DEBUG", "1")
    fake["install"]("ringloom.train.trainer", "run_training", raises=RuntimeError("bug"))
    with pytest.raises(RuntimeError, match="bug"):
        main(["train"])


def test_sample(fake, capsys):
    assert main(["sample"]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["sample", "--model", "runs/x", "--prompt", "def f(", "--length", "50",
                 "--temperature", "1.5", "--top-k", "0", "--seed", "4", "--device", "cuda"]) == 0
    a = fake["sample_from_dir"]
    assert (a.model, a.prompt, a.length, a.temperature, a.top_k, a.seed, a.device) == \
        ("runs/x", "def f(", 50, 1.5, 0, 4, "cuda")
    fake["install"]("ringloom.train.sampling", "sample_from_dir",
                    raises=FileNotFoundError("no model in runs/x"))
    assert main(["sample", "--model", "runs/x"]) == 2
    assert capsys.readouterr().err == "ringloom sample: error: no model in runs/x\n"


def test_launch_forwards_argv_verbatim(fake):
    rest = ["-n", "3", "--backend", "ring", "script.py", "--steps", "5", "-x"]
    assert main(["launch", *rest]) == 0
    assert fake["main"] == rest


def test_no_command_and_help(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("train", "sample", "launch", "prepare"):
        assert cmd in out


def test_prepare(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        (data / f"f{i}.txt").write_text(f"document number {i}\n" * (i + 3))
    out = tmp_path / "shards"
    assert main(["prepare", "--data", str(data), "--out", str(out), "--val-fraction", "0.3"]) == 0
    assert "4 files" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["meta.json", "train.bin", "val.bin"]


def test_prepare_errors(tmp_path, capsys):
    assert main(["prepare", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("ringloom prepare: error: data path not found")
    (tmp_path / "empty.txt").write_text("")
    assert main(["prepare", "--data", str(tmp_path / "empty.txt"), "--out", str(tmp_path)]) == 2
    assert "data is empty" in capsys.readouterr().err


def test_python_dash_m(tmp_path):
    # The same ringloom this test process imported (installed, or the dev tree via PYTHONPATH).
    r = subprocess.run([sys.executable, "-m", "ringloom", "train", "--steps", "-1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--steps: must be at least 1" in r.stderr and "Traceback" not in r.stderr


# ---- hostile inputs through the real back ends: one line naming the option or file, exit 2 ----
def _one_line_error(capsys, command: str, needle: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"ringloom {command}: error: ") and err.count("\n") == 1, err
    assert needle in err and "Traceback" not in err, err
    return err


@pytest.fixture
def saved_model(tmp_path):
    from ringloom.models import build_model, get_preset
    from ringloom.train.model_io import save_model
    out = tmp_path / "model"
    save_model(build_model(get_preset("tiny", n_layer=1, n_embd=32, max_seq_len=16), seed=0), str(out), "byte")
    return out


def test_train_out_naming_a_file_or_a_too_long_name(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    assert main(["train", "--out", str(f), "--steps", "1"]) == 2
    _one_line_error(capsys, "train", "notes.txt: exists and is not a directory")
    assert f.read_text() == "keep me"
    assert main(["train", "--out", str(tmp_path / ("r" * 300)), "--steps", "1"]) == 2
    _one_line_error(capsys, "train", "cannot create the directory (File name too long)")


@pytest.mark.parametrize("argv,needle", [
    (["--threads", "5000"], "threads (--threads) must be an integer >= 0 and <= 1024"),
    (["--prompt", "caf\udce9"], "prompt (--prompt) is not valid UTF-8"),
])
def test_train_values_refused_before_any_work(tmp_path, capsys, argv, needle):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *argv]) == 2
    _one_line_error(capsys, "train", needle)
    assert not out.exists()


@pytest.mark.parametrize("meta,needle", [
    ({"tokenizer": "byte"}, "model.json: expected an object with a 'config' object"),
    ([1, 2], "model.json: expected an object"),
    ("{", "model.json: not valid JSON"),
    ({"config": {"arch": "gpt2", "wings": 2}, "tokenizer": "byte"}, "model.json: bad model config: ModelConfig: "
                                                                    "unknown fields ['wings']"),
    ({"config": {"n_layer": "2"}, "tokenizer": "byte"}, "n_layer must be a positive integer"),
    ({"config": {"norm_eps": float("nan")}, "tokenizer": "byte"}, "norm_eps must be a finite positive number"),
    ({"config": {}, "tokenizer": "bpe:../../outside.json"}, "leaves its directory"),
    ({"config": {}, "tokenizer": "bpe:/etc/hostname"}, "not a relative path"),
])
def test_sample_with_a_bad_model_json(saved_model, capsys, meta, needle):
    cfg = json.load(open(saved_model / "model.json"))["config"]
    if isinstance(meta, dict) and "config" in meta:
        meta = {**meta, "config": {**cfg, **meta["config"]}}
    (saved_model / "model.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    assert main(["sample", "--model", str(saved_model), "--length", "2"]) == 2
    _one_line_error(capsys, "sample", needle)


def test_sample_with_a_tokenizer_linked_out_of_the_model(saved_model, tmp_path, capsys):
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    os.symlink(outside, saved_model / "tokenizer.json")
    meta = json.load(open(saved_model / "model.json"))
    (saved_model / "model.json").write_text(json.dumps({**meta, "tokenizer": "bpe:tokenizer.json"}))
    assert main(["sample", "--model", str(saved_model)]) == 2
    _one_line_error(capsys, "sample", "tokenizer.json: cannot open (a symbolic link")


def test_sample_with_a_forged_safetensors_header(saved_model, capsys):
    header = {"w": {"dtype": "F32", "shape": [2**64, 2**64, 0], "data_offsets": [0, 0]}}
    blob = json.dumps(header).encode()
    (saved_model / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob)
    assert main(["sample", "--model", str(saved_model)]) == 2
    _one_line_error(capsys, "sample", "model.safetensors: corrupted safetensors header: tensor 'w' has an invalid shape")
    header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}}
    blob = json.dumps(header).encode()
    (saved_model / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 4)
    assert main(["sample", "--model", str(saved_model)]) == 2
    _one_line_error(capsys, "sample", "invalid data_offsets")


def test_sample_bad_prompt_and_seed(saved_model, capsys):
    assert main(["sample", "--model", str(saved_model), "--prompt", "\udcff"]) == 2
    _one_line_error(capsys, "sample", "--prompt is not valid UTF-8")
    assert main(["sample", "--model", str(saved_model), "--seed", "-4"]) == 2
    _one_line_error(capsys, "sample", "--seed must be an integer >= 0")


@pytest.mark.parametrize("line,needle", [
    ("[1, 2]", "metrics.jsonl, line 2: not a metrics record"),
    ('"text"', "metrics.jsonl, line 2: not a metrics record"),
    ('{"loss": 1.0}', "metrics.jsonl, line 2: not a metrics record"),
    ('{"step": "3"}', "metrics.jsonl, line 2: not a metrics record"),
    ("{nope", "metrics.jsonl, line 2: not a JSON line"),
])
def test_plot_with_bad_metrics_lines(tmp_path, capsys, line, needle):
    pytest.importorskip("matplotlib", reason="ringloom plot needs matplotlib (pip install 'ringloom[plot]')")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0, "tokens_per_s": 5}\n' + line + "\n")
    assert main(["plot", str(tmp_path)]) == 2
    _one_line_error(capsys, "plot", needle)


def test_plot_with_non_utf8_metrics(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1, "loss": "\xff"}\n')
    assert main(["plot", str(tmp_path)]) == 2
    _one_line_error(capsys, "plot", "metrics.jsonl, line 1: not a JSON line")


def test_prepare_out_of_foreign_files(tmp_path, capsys):
    data = tmp_path / "d.txt"
    data.write_text("some text to tokenize\n" * 50)
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.bin").write_bytes(b"someone else's")
    assert main(["prepare", "--data", str(data), "--out", str(out)]) == 2
    _one_line_error(capsys, "prepare", "holds train.bin but no dataset prepared by ringloom")
    assert (out / "train.bin").read_bytes() == b"someone else's"
    assert main(["prepare", "--data", str(data), "--out", str(out), "--overwrite"]) == 0
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["prepare", "--data", str(data), "--out", str(f)]) == 2
    _one_line_error(capsys, "prepare", "exists and is not a directory")


@pytest.mark.parametrize("argv,needle", [
    (["--grace", "nan", "x.py"], "--grace must be a finite number"),
    (["--master-port", "70000", "x.py"], "--master-port must be >= 1 and <= 65535"),
    (["-n", "2", "no_such_script.py"], "script 'no_such_script.py' not found"),
])
def test_launch_usage_errors(capsys, argv, needle):
    assert main(["launch", *argv]) == 2
    assert needle in capsys.readouterr().err
