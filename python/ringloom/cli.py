"""The ``ringloom`` command: train, sample, launch, prepare.

    ringloom train [--preset tiny] [--steps N] [--data PATH ...] [--out DIR] ...
    ringloom sample --model DIR [--prompt TEXT] [--length N] ...
    ringloom launch -n 4 script.py [args ...]        (see ringloom.launch)
    ringloom prepare [--data PATH ...] [--tokenizer byte] --out DIR
    ringloom plot RUN_DIR [--out DIR]                 loss.png, throughput.png

This module only parses and checks arguments; the work is done by
``ringloom.train.trainer.run_training(args)``, ``ringloom.train.sampling.sample_from_dir(args)``,
``ringloom.launch.main(argv)``, ``ringloom.data.prepare_dataset`` and
``ringloom.train.plot.plot_run``, imported when used.
A ValueError or missing-file error from them is a user error: one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Callable, Sequence

USAGE_ERROR = 2
_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                PermissionError)


# ---- argument types: each says what is wrong -------------------------------------------------
def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _float_in(low: float, high: float | None = None, low_open: bool = False
              ) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value != value or (value <= low if low_open else value < low) or \
                (high is not None and value > high):
            bounds = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high else "")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


positive_int = _int_at_least(1)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every entry must be at least 1, got {text!r}")
    return values
nonneg_int = _int_at_least(0)
positive_float = _float_in(0.0, low_open=True)
nonneg_float = _float_in(0.0)


def device_arg(text: str) -> str:
    if re.fullmatch(r"cpu|cuda(:\d+)?", text):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")


def tokenizer_arg(text: str) -> str:
    if text == "byte" or (text.startswith("bpe:") and len(text) > 4):
        return text
    if text.startswith("bpe-train:"):
        from .data.tokenizer import parse_bpe_train_spec
        try:
            parse_bpe_train_spec(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    raise argparse.ArgumentTypeError(
        f"expected byte, bpe:PATH/tokenizer.json or bpe-train:VOCAB, got {text!r}")


# ---- the parser ------------------------------------------------------------------------------
def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", nargs="+", metavar="PATH", default=None,
                   help="text files or directories (recursive); default: the built-in corpus "
                        "(the Python standard library's .py sources)")
    g.add_argument("--corpus-bytes", type=positive_int, default=8_000_000, metavar="N",
                   help="size cap of the built-in corpus in bytes (default: %(default)s)")
    g.add_argument("--tokenizer", type=tokenizer_arg, default="byte", metavar="SPEC",
                   help="byte | bpe:PATH/tokenizer.json | bpe-train:VOCAB (train BPE on the "
                        "data) (default: %(default)s)")
    g.add_argument("--val-fraction", type=_float_in(0.0, 0.5, low_open=True), default=0.1,
                   metavar="F", help="share of the documents held out for val loss "
                                     "(default: %(default)s)")


def _add_sampling_args(p: argparse.ArgumentParser, length_flag: str, length_default: int) -> None:
    p.add_argument(length_flag, dest=length_flag.lstrip("-").replace("-", "_"), type=nonneg_int,
                   default=length_default, metavar="N", help="tokens to generate "
                                                             "(default: %(default)s)")
    p.add_argument("--temperature", type=positive_float, default=0.8,
                   help="softmax temperature (default: %(default)s)")
    p.add_argument("--top-k", type=nonneg_int, default=40, metavar="K",
                   help="sample from the K most likely tokens, 0 = all (default: %(default)s)")


def _train_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a model",
                       description="Train a GPT-2 or LLaMA model; writes the model, checkpoints "
                                   "and metrics.jsonl to --out.")
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--preset", default="tiny",
                   help="model preset, e.g. tiny, gpt2-124m, llama-1b (default: %(default)s)")
    g.add_argument("--steps", type=positive_int, default=1000, help="optimizer steps "
                                                                   "(default: %(default)s)")
    g.add_argument("--batch-size", type=positive_int, default=16, metavar="B",
                   help="global batch size in sequences, over all data-parallel ranks "
                        "(default: %(default)s)")
    g.add_argument("--seq-len", type=positive_int, default=128, metavar="T",
                   help="tokens per sequence (default: %(default)s)")
    g.add_argument("--lr", type=positive_float, default=3e-3, help="peak learning rate "
                                                                  "(default: %(default)s)")
    g.add_argument("--min-lr", type=nonneg_float, default=None,
                   help="learning rate at the end of the cosine decay (default: lr / 10)")
    g.add_argument("--warmup", type=nonneg_int, default=50, metavar="STEPS",
                   help="linear warm-up steps (default: %(default)s)")
    g.add_argument("--weight-decay", type=nonneg_float, default=0.1,
                   help="AdamW decoupled weight decay (default: %(default)s)")
    g.add_argument("--grad-clip", type=nonneg_float, default=1.0,
                   help="clip the global gradient norm to this, 0 = off (default: %(default)s)")
    g.add_argument("--seed", type=int, default=1337, help="initialisation and data order "
                                                          "(default: %(default)s)")
    g.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda or cuda:N "
                                                                    "(default: %(default)s)")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="compute dtype; auto = float32 on CPU, bfloat16 on GPU")
    g.add_argument("--cuda-graph", action="store_true", default=None,
                   help="capture the training step in a CUDA Graph after 2 eager steps and replay it "
                        "(single GPU; for small models where kernel launch gaps dominate)")
    g.add_argument("--attention", choices=["ours", "cudnn", "auto"], default=None,
                   help="GPU attention: our flash kernels, cuDNN's fused SDPA, or auto = cuDNN at head "
                        "dim 128 when built, ours otherwise (default: auto)")
    g.add_argument("--deterministic-attention", action="store_true", default=None,
                   help="bitwise repeatable attention backward on a GPU (dq by a separate pass instead "
                        "of fp32 atomics; slower)")
    g.add_argument("--threads", type=nonneg_int, default=0, metavar="N",
                   help="CPU threads of the ops (OpenMP and OpenBLAS); 0 = all cores when the "
                        "machine is idle, else 1 (default: %(default)s)")

    _add_data_args(p)

    g = p.add_argument_group("evaluation, logging, output")
    g.add_argument("--eval-every", type=nonneg_int, default=100, metavar="STEPS",
                   help="val loss every N steps and at the end, 0 = only at the end "
                        "(default: %(default)s)")
    g.add_argument("--eval-batches", type=positive_int, default=8, metavar="N",
                   help="val batches per evaluation (default: %(default)s)")
    g.add_argument("--log-every", type=positive_int, default=10, metavar="STEPS",
                   help="metrics.jsonl line every N steps (default: %(default)s)")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default: runs/<preset>)")
    g.add_argument("--save-every", type=nonneg_int, default=0, metavar="STEPS",
                   help="checkpoint every N steps, 0 = only at the end (default: %(default)s)")
    g.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CKPT",
                   help="resume from a checkpoint (default when given without a value: the "
                        "latest in --out)")
    g.add_argument("--keep-checkpoints", type=nonneg_int, default=3, metavar="K",
                   help="keep the newest K complete checkpoints, 0 = all (default: %(default)s)")
    g.add_argument("--on-nonfinite", choices=["stop", "skip"], default="stop",
                   help="when a step's loss or gradients are NaN/inf: stop with an error, or "
                        "skip the update (default: %(default)s)")
    g.add_argument("--peak-tflops", type=positive_float, default=None, metavar="TFLOPS",
                   help="peak FLOP/s for MFU (default: 989, an H100's dense BF16, on GPU; no "
                        "MFU on CPU)")
    g.add_argument("--no-tensorboard", action="store_true",
                   help="no TensorBoard event files in --out/tb")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    g = p.add_argument_group("samples")
    g.add_argument("--sample-every", type=nonneg_int, default=0, metavar="STEPS",
                   help="print a sample every N steps, 0 = only at the end (default: %(default)s)")
    g.add_argument("--prompt", default="", help="prompt for the samples (default: empty)")
    _add_sampling_args(g, "--sample-len", 200)

    g = p.add_argument_group("parallelism (one process per rank; start with ringloom launch)")
    g.add_argument("--dp", type=positive_int, default=None,
                   help="data-parallel ranks (default: world size / pp)")
    g.add_argument("--pp", type=positive_int, default=1, help="pipeline stages "
                                                              "(default: %(default)s)")
    g.add_argument("--schedule", default="1f1b", choices=["gpipe", "1f1b", "interleaved", "zb-h1", "zb"],
                   help="pipeline schedule; zb = zb-h1, the zero-bubble schedule (default: %(default)s)")
    g.add_argument("--micro-batches", type=positive_int, default=None, metavar="M",
                   help="micro-batches per step and rank (default: pp)")
    g.add_argument("--chunks", type=positive_int, default=None, metavar="V",
                   help="virtual stages per rank for --schedule interleaved (default: 2)")
    g.add_argument("--stage-layers", type=_int_list, default=None, metavar="N,N,...",
                   help="layers per (virtual) stage, e.g. 3,2,2 (default: balanced by parameter count)")
    g.add_argument("--zero", action="store_true",
                   help="ZeRO-1: shard the optimizer state over the data-parallel ranks")
    g.add_argument("--bucket-mb", type=positive_float, default=25.0, metavar="MB",
                   help="gradient all-reduce bucket size (default: %(default)s)")
    g.add_argument("--compression", default="none", metavar="SPEC",
                   help="compress the data-parallel gradient reduction: none, bf16, topk:RATIO (error "
                        "feedback), powersgd:RANK or qsgd:LEVELS[:BUCKET] (stochastic quantisation to "
                        "LEVELS levels per 512-element bucket, unbiased) (default: %(default)s)")
    g.add_argument("--local-sgd", type=int, default=0, metavar="H",
                   help="local SGD: replicas step alone and average their weights every H steps, "
                        "0 = off (default: %(default)s)")
    g.add_argument("--local-sgd-moments", action="store_true",
                   help="with --local-sgd, average AdamW's moments too")
    g.add_argument("--param-servers", type=nonneg_int, default=0, metavar="S",
                   help="parameter-server training: the last S ranks hold the parameters (sharded) and "
                        "their AdamW state; the other ranks are workers that push gradients and pull "
                        "parameters. Needs S + 1 ranks or more; not with --pp, --zero, --local-sgd, "
                        "--compression, --micro-batches, --cuda-graph, --trace. 0 = off (default: %(default)s)")
    g.add_argument("--ps-mode", choices=["sync", "async"], default="sync",
                   help="with --param-servers: sync (every step sums all workers' gradients: the same "
                        "run as all-reduce data parallel) or async (servers update every W gradients as "
                        "they arrive; workers may run ahead, see --ps-staleness) (default: %(default)s)")
    g.add_argument("--ps-staleness", type=nonneg_int, default=0, metavar="STEPS",
                   help="with --ps-mode async: how many steps a worker may run ahead of the slowest "
                        "(0 = lockstep, equal to sync) (default: %(default)s)")
    g.add_argument("--trace", default=None, metavar="PATH",
                   help="write a Chrome trace JSON of every rank's compute and communication")
    g.add_argument("--backend", default=None,
                   help="collective backend: nccl, ring or tree (default: nccl on GPU, ring "
                        "on CPU)")
    return p


def _sample_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sample", help="generate text from a saved model",
                       description="Generate text from a model saved by ringloom train.")
    p.add_argument("--model", required=True, metavar="DIR", help="a ringloom train --out "
                                                                  "directory")
    p.add_argument("--prompt", default="", help="text to continue (default: empty)")
    _add_sampling_args(p, "--length", 200)
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda or cuda:N "
                                                                    "(default: %(default)s)")
    return p


def _prepare_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("prepare", help="tokenize data into train/val shards",
                       description="Tokenize text into train.bin / val.bin token shards and "
                                   "meta.json (the format is in docs/data-format.md).")
    _add_data_args(p)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default: a cache folder keyed by the inputs)")
    return p


def _plot_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("plot", help="plot a run's loss and throughput",
                       description="Write loss.png and throughput.png from RUN_DIR/metrics.jsonl "
                                   "(needs matplotlib).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a ringloom train --out directory")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write the PNGs "
                                                              "(default: RUN_DIR)")
    return p


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(
        prog="ringloom", description="Train GPT-2 and LLaMA style language models on CPUs and "
                                     "GPUs with ringloom's C++/CUDA core.")
    parser.add_argument("--version", action="version", version=f"ringloom {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Kept so that errors found after parsing are reported as "ringloom <command>: error".
    parser.commands = {"train": _train_parser(sub), "sample": _sample_parser(sub)}
    sub.add_parser("launch", help="start one process per rank: ringloom launch -n N "
                                  "script.py|-m module [args ...]", add_help=False)
    parser.commands["prepare"] = _prepare_parser(sub)
    parser.commands["plot"] = _plot_parser(sub)
    return parser


def _check_train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Cross-argument checks that need no model or data."""
    if args.out is None:
        args.out = f"runs/{args.preset}"
    if args.dp is not None and args.batch_size % args.dp:
        parser.error(f"--batch-size {args.batch_size} is not divisible by --dp {args.dp}")
    if args.micro_batches is not None:
        per_rank = args.batch_size // (args.dp or 1)
        if per_rank % args.micro_batches:
            parser.error(f"the per-rank batch {per_rank} (--batch-size / --dp) is not "
                         f"divisible by --micro-batches {args.micro_batches}")
    if args.min_lr is not None and args.min_lr > args.lr:
        parser.error(f"--min-lr {args.min_lr} is larger than --lr {args.lr}")


def _prepare(args: argparse.Namespace) -> int:
    import os

    from .data.corpus import prepare_data

    _, data = prepare_data(args.data, args.tokenizer, args.out, args.val_fraction,
                           args.corpus_bytes)
    m = data.meta
    print(f"{m['files']} files, {m['bytes']} bytes -> train {m['train']['tokens']} tokens "
          f"({m['train']['documents']} docs), val {m['val']['tokens']} tokens "
          f"({m['val']['documents']} docs), tokenizer {m['tokenizer']}, vocab {m['vocab_size']}")
    print(f"written to {os.path.abspath(data.dir)}")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        from .train.trainer import run_training
        rc = run_training(args)  # the summary dict on success, which is not an exit code
        return rc if isinstance(rc, int) else 0
    if args.command == "sample":
        from .train.sampling import sample_from_dir
        return sample_from_dir(args) or 0
    if args.command == "prepare":
        return _prepare(args)
    if args.command == "plot":
        from .train.plot import plot_run
        for path in plot_run(args.run_dir, args.out):
            print(f"wrote {path}")
        return 0
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "launch":
        # launch has its own parser and passes everything after the script on untouched.
        from .launch import main as launch_main
        return launch_main(argv[1:]) or 0

    parser = build_parser()
    try:  # argparse exits 2 on errors, 0 on --help/--version
        args, extra = parser.parse_known_args(argv)
        command_parser = parser.commands[args.command]
        if extra:
            command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command == "train":
            _check_train(command_parser, args)
    except SystemExit as e:
        return 0 if e.code is None else e.code if isinstance(e.code, int) else USAGE_ERROR
    try:
        return _run(args)
    except _USER_ERRORS as e:
        msg = " ".join(str(e).split("\n")) or type(e).__name__
        print(f"ringloom {args.command}: error: {msg}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"ringloom {args.command}: interrupted", file=sys.stderr)
        return 130
