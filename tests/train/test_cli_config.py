"""`ringloom train`'s arguments are generated from TrainConfig (train/cli_args.py): the
parser is derived here from the config and checked field by field, so that a default, a
flag or a model field cannot be missing or different on one side."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from ringloom.cli import build_parser
from ringloom.models import get_preset
from ringloom.models.config import ModelConfig
from ringloom.train.cli_args import flag
from ringloom.train.config import GROUPS, TrainConfig


def _train_parser() -> argparse.ArgumentParser:
    return build_parser().commands["train"]


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def _actions() -> dict[str, argparse.Action]:
    return {a.dest: a for a in _train_parser()._actions}


CLI_FIELDS = [f for f in dataclasses.fields(TrainConfig) if f.name != "model_overrides"]


@pytest.mark.parametrize("f", CLI_FIELDS, ids=[f.name for f in CLI_FIELDS])
def test_every_field_has_its_flag_and_default(f):
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    actions = _actions()
    if isinstance(default, bool) and default:
        action = actions[f"no_{f.name}"]     # on by default: --no-<name> switches it off
        assert action.option_strings == [flag("no_" + f.name)]
        return
    action = actions[f.name]
    assert action.option_strings == [flag(f.name)]
    if isinstance(default, bool):
        assert action.default is None and action.const is True    # a switch
    elif default == []:
        assert action.default is None                             # the field's empty list
    else:
        assert action.default == default
    assert f.metadata["group"] in GROUPS


def test_no_arguments_give_the_default_config():
    assert TrainConfig.from_args(_parse()) == TrainConfig()


def test_every_flag_reaches_the_config():
    """A config with every field off its default, written as arguments and parsed back."""
    changed = dict(preset="llama-tiny", steps=7, batch_size=8, seq_len=32, lr=1e-3, min_lr=1e-4, warmup=3,
                   lr_schedule="linear", weight_decay=0.05, grad_clip=0.5, seed=3, device="cuda:1",
                   dtype="bfloat16", cuda_graph=False, attention="ours", deterministic_attention=True, threads=2,
                   data=["a.txt", "b"],                   corpus_bytes=1000, tokenizer="byte", val_fraction=0.2, eval_every=5, eval_batches=2,
                   log_every=2, out="o", save_every=4, resume="latest", overwrite=True, keep_checkpoints=1, on_nonfinite="skip",
                   peak_tflops=100.0, tensorboard=False, progress=False, sample_every=3, prompt="p", sample_len=9,
                   temperature=0.5, top_k=3, dp=2, pp=2, schedule="interleaved", micro_batches=2, chunks=2,
                   stage_layers=[1, 1, 1, 1], zero=True, bucket_mb=4.0, compression="none", local_sgd=0,
                   local_sgd_moments=True, param_servers=0, ps_mode="sync", ps_staleness=0, trace="t.json",
                   backend="ring")
    assert set(changed) == {f.name for f in CLI_FIELDS}
    argv: list[str] = []
    for name, value in changed.items():
        if isinstance(value, bool):   # a switch, or --no-<name> for a field on by default
            if value:
                argv.append(flag(name))
            elif name in ("tensorboard", "progress"):
                argv.append(flag("no_" + name))
        elif isinstance(value, list):
            argv += [flag(name)] + ([",".join(map(str, value))] if name == "stage_layers" else value)
        else:
            argv += [flag(name), str(value)]
    got = TrainConfig.from_args(_parse(*argv))
    assert got == TrainConfig(**changed)


MODEL_FIELDS = [f for f in dataclasses.fields(ModelConfig) if f.name != "vocab_size"]


@pytest.mark.parametrize("f", MODEL_FIELDS, ids=[f.name for f in MODEL_FIELDS])
def test_every_model_field_overrides_the_preset(f):
    base = get_preset("llama-tiny")
    value = {"arch": "gpt2", "n_layer": 2, "n_head": 8, "n_kv_head": 4, "n_embd": 64, "ffn_hidden": 96,
             "max_seq_len": 128, "norm_eps": 1e-6, "rope_base": 500.0, "tie_embeddings": True,
             "bias": True}[f.name]
    assert getattr(base, f.name) != value
    if isinstance(value, bool):
        argv = [flag(f.name) if value else flag("no_" + f.name)]
    else:
        argv = [flag(f.name), str(value)]
    cfg = TrainConfig.from_args(_parse("--preset", "llama-tiny", *argv))
    assert cfg.model_overrides == {f.name: value}
    assert getattr(get_preset(cfg.preset, **cfg.model_overrides), f.name) == value


def test_model_overrides_derive_the_rest():
    cfg = TrainConfig.from_args(_parse("--n-layer", "2", "--n-embd", "64", "--n-head", "2"))
    model = get_preset(cfg.preset, **cfg.model_overrides)
    assert (model.n_layer, model.n_embd, model.n_head, model.ffn_hidden) == (2, 64, 2, 256)
    assert TrainConfig.from_args(_parse()).model_overrides == {}


def test_help_is_grouped():
    text = _train_parser().format_help()
    positions = [text.index(g + ":") for g in GROUPS]
    assert positions == sorted(positions)
    assert "model shape" in text and "--n-layer" in text


def test_a_run_with_model_overrides(train_config):
    import json
    import os

    from ringloom.train.trainer import run_training

    cfg = train_config(steps=2, model_overrides={"n_layer": 1, "n_embd": 32, "n_head": 2})
    run_training(cfg)
    with open(os.path.join(cfg.out, "model.json")) as f:
        model = json.load(f)["config"]
    assert (model["n_layer"], model["n_embd"], model["n_head"], model["ffn_hidden"]) == (1, 32, 2, 128)
