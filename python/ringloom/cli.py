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
Any other exception is reported the same way as an internal error, exit 1; with
RINGLOOM_DEBUG=1 in the environment it propagates with its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .train.cli_args import (add_data_arguments, add_train_arguments, device_arg, nonneg_int,
                             positive_float)

USAGE_ERROR = 2
INTERNAL_ERROR = 1
# OSError: a missing, unreadable or unwritable file, a name too long, a full disk; its
# message names the file.
_USER_ERRORS = (ValueError, OSError)


# ---- the parser ------------------------------------------------------------------------------
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
                                   "and metrics.jsonl to --out. Every option is a field of "
                                   "ringloom.train.config.TrainConfig (docs/training.md).")
    add_train_arguments(p)
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
    add_data_arguments(p)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default: a cache folder keyed by the inputs)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out even when it holds files of the names prepare writes that are "
                        "not a prepared dataset")
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
    """Every option rule (train/options.py) before any model or data work."""
    from .train.config import TrainConfig

    if args.out is None:
        args.out = f"runs/{args.preset}"
    try:
        TrainConfig.from_args(args)
    except ValueError as e:   # one line, as the job's own errors (no usage: the arguments parsed)
        print(f"{parser.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None


def _prepare(args: argparse.Namespace) -> int:
    from .data.corpus import prepare_data
    from .train.run_dir import check_dataset_dir

    if args.out is not None:
        check_dataset_dir(args.out, args.overwrite)
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


def _internal_error(command: str, e: BaseException) -> int:
    """The last resort: an exception no check foresaw still ends in one line (and the
    traceback with RINGLOOM_DEBUG=1)."""
    if os.environ.get("RINGLOOM_DEBUG", "") not in ("", "0"):
        raise e
    msg = " ".join(str(e).split()) or "(no message)"
    print(f"ringloom {command}: internal error: {type(e).__name__}: {msg} (set RINGLOOM_DEBUG=1 for the "
          "traceback)", file=sys.stderr)
    return INTERNAL_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "launch":
        # launch has its own parser and passes everything after the script on untouched.
        from .launch import main as launch_main
        try:
            return launch_main(argv[1:]) or 0
        except Exception as e:  # noqa: BLE001 -- one line, see _internal_error
            return _internal_error("launch", e)

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
    except Exception as e:  # noqa: BLE001 -- one line, see _internal_error
        return _internal_error(args.command, e)
