"""Helpers for testing models trained with ringloom: comparisons with per-precision
tolerances, the float64 reference model, golden runs and multi-rank runs.

    from ringloom.testing import assert_close, reference_model, golden_run

    assert_close(model.logits(ids), reference_model(cfg, model.state_dict()).logits(ids))
    golden_run(cfg, steps=20, seed=0, golden="tests/golden/my_model.json")

The pytest plugin (ringloom.testing.plugin, loaded automatically once ringloom is
installed) adds the `gpu` and `multiproc` markers, the `rl_device`, `rl_ranks` and
`rl_rng` fixtures and the --ringloom-update-golden option. docs/testing.md has a walk-through.
"""
from .compare import TOLERANCES, Tolerance, assert_close, precision_of, rel_err, to_numpy
from .golden import GoldenResult, GoldenTolerance, SpeedWarning, golden_run
from .ranks import RankError, child_env, run_in_ranks
from .reference import ReferenceModel, reference_model

__all__ = [
    "TOLERANCES", "Tolerance", "assert_close", "precision_of", "rel_err", "to_numpy",
    "GoldenResult", "GoldenTolerance", "SpeedWarning", "golden_run",
    "RankError", "child_env", "run_in_ranks",
    "ReferenceModel", "reference_model",
]
