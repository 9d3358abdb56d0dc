"""``ringloom train``'s arguments, generated from TrainConfig's fields (train/config.py) and
ModelConfig's (models/config.py), so that the CLI and the config cannot disagree.

    add_train_arguments(parser)     every TrainConfig field, in its help group, plus the model shape
    add_data_arguments(parser)      the data group alone (ringloom prepare)
    TrainConfig.from_args(args)     back from the namespace

A field ``name`` becomes ``--name-with-dashes``; a boolean that is off by default a switch
(``--zero``), one that is on by default ``--no-name`` (``--no-progress``). Its default is
the field's; its help and bounds come from the field's metadata.

Model shape: every ModelConfig field but the vocabulary (which comes from the tokenizer)
is an option of its own, ``--n-layer 2 --n-embd 64 --arch llama ...``, that replaces the
preset's value (its derived fields follow: ``--n-embd 64`` on a GPT-2 preset makes
ffn_hidden 256). Its destination is ``model.<field>``; TrainConfig.model_overrides gets it.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import typing
from typing import Any, Callable


# ---- argument types: each says what is wrong ------------------------------------------------
def int_at_least(low: int | None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    parse.__name__ = "integer" if low is None else f"integer >= {low}"
    return parse


def float_in(low: float | None = None, high: float | None = None, low_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if (low is not None and (value <= low if low_open else value < low)) or \
                (high is not None and value > high):
            bounds = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high else "")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)
positive_float = float_in(0.0, low_open=True)


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every entry must be at least 1, got {text!r}")
    return values


def device_arg(text: str) -> str:
    if re.fullmatch(r"cpu|cuda(:\d+)?", text):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")


def tokenizer_arg(text: str) -> str:
    if text == "byte" or (text.startswith("bpe:") and len(text) > 4):
        return text
    if text.startswith("bpe-train:"):
        from ..data.tokenizer import parse_bpe_train_spec
        try:
            parse_bpe_train_spec(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    raise argparse.ArgumentTypeError(f"expected byte, bpe:PATH/tokenizer.json or bpe-train:VOCAB, got {text!r}")


_KINDS = {"device": device_arg, "tokenizer": tokenizer_arg, "int_list": int_list}

# ModelConfig fields a user may set, with their help (the vocabulary comes from the tokenizer).
MODEL_SHAPE = "model shape (each replaces the preset's value)"
_MODEL_HELP = {
    "arch": "gpt2 (LayerNorm, GELU, learned positions) or llama (RMSNorm, SwiGLU, RoPE, GQA)",
    "n_layer": "decoder blocks",
    "n_head": "attention heads",
    "n_kv_head": "key/value heads (grouped-query attention; default: n_head)",
    "n_embd": "model width C",
    "ffn_hidden": "MLP hidden width (default: 4C for gpt2, 8C/3 rounded up to 64 for llama)",
    "max_seq_len": "longest sequence (positions)",
    "norm_eps": "epsilon of the norms",
    "rope_base": "RoPE base frequency (llama)",
    "tie_embeddings": "the LM head shares the token embedding",
    "bias": "biases in the linear layers and norms",
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(tp: Any) -> type:
    """int for ``int | None``, etc."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def _field_argument(f: dataclasses.Field, tp: Any) -> tuple[list[str], dict[str, Any]]:
    """(flags, add_argument keywords) of one TrainConfig field."""
    meta = f.metadata
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    base = _base_type(tp)
    kw: dict[str, Any] = {"help": meta["help"]}
    if base is bool:   # a switch: --name when off by default, --no-name when on
        if default:
            return [flag("no_" + f.name)], {"action": "store_true", "help": "no " + meta["help"]}
        return [flag(f.name)], {**kw, "action": "store_true", "default": None}
    for key in ("metavar", "choices", "nargs", "const"):
        if key in meta:
            kw[key] = list(meta[key]) if key == "choices" else meta[key]
    if "kind" in meta:
        kw["type"] = _KINDS[meta["kind"]]
    elif base is int:
        kw["type"] = int_at_least(meta.get("low"))
    elif base is float:
        kw["type"] = float_in(meta.get("low"), meta.get("high"), meta.get("low_open", False))
    kw["default"] = None if isinstance(default, list) and not default else default
    if kw["default"] is not None and "(default" not in kw["help"]:
        kw["help"] += " (default: %(default)s)"
    return [flag(f.name)], kw


def add_config_group(parser: argparse.ArgumentParser, group: str) -> None:
    """The TrainConfig fields of one help group as arguments of ``parser``."""
    from .config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    g = parser.add_argument_group(group)
    for f in dataclasses.fields(TrainConfig):
        if f.metadata.get("group") == group:
            flags, kw = _field_argument(f, hints[f.name])
            g.add_argument(*flags, **kw)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--<field> for every settable ModelConfig field, stored as ``model.<field>``."""
    from ..models.config import ARCHS, ModelConfig

    hints = typing.get_type_hints(ModelConfig)
    g = parser.add_argument_group(MODEL_SHAPE)
    for f in dataclasses.fields(ModelConfig):
        if f.name not in _MODEL_HELP:
            continue
        base = _base_type(hints[f.name])
        kw: dict[str, Any] = {"dest": f"model.{f.name}", "default": None, "help": _MODEL_HELP[f.name]}
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif f.name == "arch":
            kw["choices"] = list(ARCHS)
        elif base is int:
            kw.update(type=positive_int, metavar="N")
        else:
            kw.update(type=positive_float, metavar="X")
        g.add_argument(flag(f.name), **kw)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every TrainConfig field, grouped as in `ringloom train --help`, and the model shape."""
    from .config import GROUPS, MODEL

    for group in GROUPS:
        add_config_group(parser, group)
        if group == MODEL:
            add_model_arguments(parser)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    from .config import DATA

    add_config_group(parser, DATA)
