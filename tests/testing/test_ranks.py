"""ringloom.testing.run_in_ranks and the rl_ranks fixture: each rank's result comes back in
rank order; a failing rank's traceback reaches the caller."""
import os

import numpy as np
import pytest

from ringloom.testing import RankError, run_in_ranks


def all_reduce_rank(n):
    import ringloom as rl
    import ringloom.distributed as dist

    pg = dist.init(timeout=30)
    t = rl.tensor(np.full(n, float(pg.rank + 1), np.float32))
    pg.all_reduce(t)
    out = (pg.rank, pg.size, np.asarray(t).tolist())
    dist.destroy()
    return out


def fail_on_rank_one():
    if os.environ["RANK"] == "1":
        raise RuntimeError("planted failure on rank 1")
    return "ok"


@pytest.mark.multiproc
def test_results_in_rank_order(rl_ranks):
    results = rl_ranks(all_reduce_rank, 3, 5)
    assert [r[0] for r in results] == [0, 1, 2]
    for rank, size, values in results:
        assert size == 3 and values == [6.0] * 5


@pytest.mark.multiproc
def test_failing_rank_reports_its_traceback():
    with pytest.raises(RankError, match=r"(?s)rank 1 raised:.*RuntimeError: planted failure on rank 1"):
        run_in_ranks(fail_on_rank_one, 2)


def test_refuses_what_ranks_cannot_import():
    with pytest.raises(ValueError, match="module-level function"):
        run_in_ranks(lambda: 1, 2)
    with pytest.raises(ValueError, match="nproc must be a positive integer"):
        run_in_ranks(fail_on_rank_one, 0)
