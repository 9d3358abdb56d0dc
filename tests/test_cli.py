"""The ringloom CLI: arguments reach the job unchanged, bad arguments and user errors give a
one-line error and exit code 2 (no traceback). The train/sample/launch back ends are replaced
by recorders, so these tests need neither models nor processes."""
from __future__ import annotations

import os
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
