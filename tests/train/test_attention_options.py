"""The GPU attention options of a training run reach the model: the Trainer's engine sets
--attention and --deterministic-attention on every block (the parsing is tested in
test_cli_config.py, the kernels they select in tests/gpu/test_attention_gpu.py)."""
from ringloom.train.trainer import Trainer


def test_trainer_sets_the_attention_options_on_its_model(train_config):
    model = Trainer(train_config(attention="ours", deterministic_attention=True)).engine.model
    assert model.attention == "ours"
    assert model.deterministic_attention is True
    assert all(b.deterministic_attention for b in model.blocks)
