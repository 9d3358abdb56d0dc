"""avg over NCCL in a group of one rank: NCCL runs it through its own one-rank kernel,
whose split of the elements between blocks can leave the tail unwritten, so the NCCL
backend hands NCCL sum (a plain copy) there (csrc/comm/nccl_group.cpp, nccl_op). These
CPU checks pin the model of that split (worker.nccl_one_rank_unwritten) to the size the
GPU tests first failed at, and make sure the sizes the GPU tests use for avg
(worker.AVG_TAIL_SIZES) are ones the kernel gets wrong, so the GPU tests keep covering it."""
from __future__ import annotations

import pytest

from worker import AVG_TAIL_SIZES, nccl_one_rank_unwritten


def test_the_failing_size_loses_its_last_element():
    # reduce_scatter avg float32[1 x 4194305]: 32 blocks of 131072, one element never written.
    assert nccl_one_rank_unwritten(4194305, 4) == 1
    assert nccl_one_rank_unwritten(4194304, 4) == 0
    # 20011 float32 (a size the GPU test passed at): 5 blocks of 4004 cover it.
    assert nccl_one_rank_unwritten(20011, 4) == 0


@pytest.mark.parametrize("dtype", sorted(AVG_TAIL_SIZES))
def test_gpu_avg_sizes_hit_the_unwritten_tail(dtype):
    esize = 4 if dtype == "float32" else 2
    assert nccl_one_rank_unwritten(AVG_TAIL_SIZES[dtype], esize) > 0

