"""Every rule of train/options.validate, one case each: the option values or combinations a
run refuses before any process or data work, and the message that names the flags."""
from __future__ import annotations

import pytest

from ringloom.train.config import TrainConfig
from ringloom.train.options import Layout, validate

# (TrainConfig fields, the message's needle): refused when the config is made.
OPTION_RULES = [
    (dict(steps=0), "steps (--steps) must be an integer >= 1, got 0"),
    (dict(batch_size=0), "batch_size (--batch-size) must be an integer >= 1, got 0"),
    (dict(seq_len=0), "seq_len (--seq-len) must be an integer >= 1, got 0"),
    (dict(eval_batches=0), "eval_batches (--eval-batches) must be an integer >= 1, got 0"),
    (dict(log_every=0), "log_every (--log-every) must be an integer >= 1, got 0"),
    (dict(pp=0), "pp (--pp) must be an integer >= 1, got 0"),
    (dict(dp=0), "dp (--dp) must be an integer >= 1, got 0"),
    (dict(micro_batches=0), "micro_batches (--micro-batches) must be an integer >= 1, got 0"),
    (dict(chunks=0), "chunks (--chunks) must be an integer >= 1, got 0"),
    (dict(keep_checkpoints=-1), "keep_checkpoints (--keep-checkpoints) must be an integer >= 0, got -1"),
    (dict(save_every=-2), "save_every (--save-every) must be an integer >= 0, got -2"),
    (dict(eval_every=-1), "eval_every (--eval-every) must be an integer >= 0, got -1"),
    (dict(sample_every=-1), "sample_every (--sample-every) must be an integer >= 0, got -1"),
    (dict(param_servers=-1), "param_servers (--param-servers) must be an integer >= 0, got -1"),
    (dict(ps_staleness=-1), "ps_staleness (--ps-staleness) must be an integer >= 0, got -1"),
    (dict(local_sgd=-1), "local_sgd (--local-sgd) must be an integer >= 0, got -1"),
    (dict(threads=-1), "threads (--threads) must be an integer >= 0 and <= 1024, got -1"),
    (dict(lr=-1.0), "lr (--lr) must be a finite number > 0.0, got -1.0"),
    (dict(lr=float("inf")), "lr (--lr) must be a finite number > 0.0, got inf"),
    (dict(bucket_mb=0.0), "bucket_mb (--bucket-mb) must be a finite number > 0.0, got 0.0"),
    (dict(attention="flash"), "attention must be ours, cudnn or auto, got 'flash'"),
    (dict(attention="cudnn", deterministic_attention=True), "--deterministic-attention needs --attention ours or auto"),
    (dict(on_nonfinite="warn"), "on_nonfinite must be stop or skip, got 'warn'"),
    (dict(ps_mode="lazy"), "ps_mode must be sync or async"),
    (dict(dtype="float16"), "dtype must be auto, float32 or bfloat16"),
    (dict(lr_schedule="exp"), "lr_schedule must be cosine, linear or constant"),
    (dict(schedule="pipedream"), "schedule must be gpipe, 1f1b, interleaved, zb-h1 or zb"),
    (dict(device="gpu"), "unknown device 'gpu'"),
    (dict(compression="gzip"), "unknown compression 'gzip'"),
    (dict(lr=1e-3, min_lr=1e-2), "--min-lr 0.01 is larger than --lr 0.001"),
    (dict(dtype="bfloat16"), "--dtype bfloat16: the CPU backend computes in float32"),
    (dict(batch_size=10, dp=3), "--batch-size 10 is not divisible by --dp 3"),
    (dict(batch_size=12, dp=2, micro_batches=4),
     "per-rank batch 6 (--batch-size / --dp) is not divisible by --micro-batches 4"),
    (dict(save_every=5, out=None), "--save-every/--resume need an output directory"),
    (dict(resume="latest", out=None), "--save-every/--resume need an output directory"),
    (dict(ps_mode="async"), "--ps-mode/--ps-staleness need --param-servers"),
    (dict(ps_staleness=2), "--ps-mode/--ps-staleness need --param-servers"),
    (dict(param_servers=1, pp=2), "--param-servers cannot be combined with --pp"),
    (dict(param_servers=1, zero=True), "--param-servers cannot be combined with --zero"),
    (dict(param_servers=1, local_sgd=2), "--param-servers cannot be combined with --local-sgd"),
    (dict(param_servers=1, compression="bf16"), "--param-servers cannot be combined with --compression"),
    (dict(param_servers=1, micro_batches=2), "--param-servers cannot be combined with --micro-batches"),
    (dict(param_servers=1, cuda_graph=True), "--param-servers cannot be combined with --cuda-graph"),
    (dict(param_servers=1, trace="t.json"), "--param-servers cannot be combined with --trace"),
    (dict(param_servers=1, on_nonfinite="skip"), "--param-servers cannot be combined with --on-nonfinite skip"),
    (dict(param_servers=1, ps_staleness=2), "--ps-staleness applies to --ps-mode async"),
    (dict(param_servers=1, ps_mode="async", save_every=2, out="o"), "--save-every with --ps-mode async"),
    (dict(local_sgd=4, zero=True), "cannot be combined with zero or compression"),
    (dict(local_sgd=4, compression="bf16"), "cannot be combined with zero or compression"),
    (dict(zero=True, compression="bf16"), "gradient compression 'bf16' cannot be combined with ZeRO"),
    (dict(resume="latest", out="o", local_sgd=2), "--resume with --local-sgd or --compression topk/powersgd"),
    (dict(resume="latest", out="o", compression="topk:0.1"), "--resume with --local-sgd"),
    (dict(resume="latest", out="o", compression="powersgd:2"), "--resume with --local-sgd"),
    (dict(chunks=2), "--chunks applies to --schedule interleaved, not 1f1b"),
    (dict(cuda_graph=True), "--cuda-graph needs --device cuda"),
    (dict(cuda_graph=True, device="cuda", pp=2), "--cuda-graph captures a single-process step"),
    (dict(cuda_graph=True, device="cuda", dp=2), "--cuda-graph captures a single-process step"),
    (dict(cuda_graph=True, device="cuda", micro_batches=2), "--cuda-graph captures a single-process step"),
    (dict(cuda_graph=True, device="cuda", on_nonfinite="skip"), "--cuda-graph cannot --on-nonfinite skip"),
]


@pytest.mark.parametrize("fields,needle", OPTION_RULES, ids=[n[:40] for _, n in OPTION_RULES])
def test_option_rule(fields, needle):
    with pytest.raises(ValueError, match=_escape(needle)):
        TrainConfig(**fields)


# (TrainConfig fields, ranks started, needle): refused when the run starts (the model, the ranks).
LAYOUT_RULES = [
    (dict(preset="gpt5"), 1, "unknown preset 'gpt5'"),
    (dict(model_overrides={"n_layers": 2}), 1, "unknown config fields"),
    (dict(model_overrides={"n_embd": 100, "n_head": 3}), 1, "must be a multiple of n_head"),
    (dict(model_overrides={"vocab_size": 100}), 1, "vocabulary size comes from the tokenizer"),
    (dict(seq_len=512), 1, "--seq-len 512 exceeds the 'tiny' preset's maximum sequence length 256"),
    (dict(seq_len=100, model_overrides={"max_seq_len": 64}), 1, "--seq-len 100 exceeds"),
    (dict(param_servers=1), 1, "--param-servers 1 needs at least 2 ranks"),
    (dict(param_servers=2), 2, "--param-servers 2 needs at least 3 ranks"),
    (dict(param_servers=1, dp=3, batch_size=6), 3, "--dp 3: with --param-servers 1 of 3 ranks there are 2 workers"),
    (dict(param_servers=1, batch_size=9), 3, "--batch-size 9 must be divisible by the 2 workers"),
    (dict(pp=3), 4, "--pp 3 does not divide the world size 4"),
    (dict(dp=4, pp=2), 4, "--dp 4 x --pp 2 = 8 ranks, but the launcher started 4"),
    (dict(dp=2, pp=2, batch_size=6), 4, "must be divisible by dp x micro-batches = 2 x 2"),
    (dict(cuda_graph=True, device="cuda"), 2, "--cuda-graph captures a single-process step"),
]


@pytest.mark.parametrize("fields,world,needle", LAYOUT_RULES, ids=[n[:40] for _, _, n in LAYOUT_RULES])
def test_layout_rule(fields, world, needle):
    cfg = TrainConfig(**fields)
    with pytest.raises(ValueError, match=_escape(needle)):
        validate(cfg, world)


def test_a_case_per_rule():
    """A rule added without a case here fails this count (each raise needs one case)."""
    import inspect

    from ringloom.train import options
    source = inspect.getsource(options)
    raises = source.count("raise ValueError") + inspect.getsource(options.check_gradient_exchange).count("raise")
    assert raises <= len(OPTION_RULES) + len(LAYOUT_RULES)


@pytest.mark.parametrize("fields,world,layout", [
    (dict(), 1, Layout(1, 1, 1)),
    (dict(pp=2, batch_size=8), 4, Layout(4, 2, 2)),
    (dict(dp=2, micro_batches=2, batch_size=8), 2, Layout(2, 2, 1)),
    (dict(param_servers=1, batch_size=4), 3, Layout(3, 2, 1, 1)),
])
def test_valid_layouts(fields, world, layout):
    assert validate(TrainConfig(**fields), world) == layout


def _escape(needle: str) -> str:
    import re
    return re.escape(needle)
