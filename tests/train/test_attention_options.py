"""The GPU attention options of a training run reach the model: --attention and
--deterministic-attention parse into TrainConfig, and the Trainer sets them on its model
(the kernels they select are tested in tests/gpu/test_attention_gpu.py)."""
from ringloom.cli import build_parser
from ringloom.train.config import TrainConfig
from ringloom.train.trainer import Trainer


def test_cli_parses_deterministic_attention():
    args = build_parser().parse_args(["train", "--deterministic-attention"])
    assert TrainConfig.from_args(args).deterministic_attention is True
    assert TrainConfig.from_args(build_parser().parse_args(["train"])).deterministic_attention is False


def test_trainer_sets_the_attention_options_on_its_model(train_config):
    t = Trainer(train_config(attention="ours", deterministic_attention=True))
    assert t.model.attention == "ours"
    assert t.model.deterministic_attention is True
    assert all(b.deterministic_attention for b in t.model.blocks)
