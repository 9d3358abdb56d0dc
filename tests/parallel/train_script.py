"""`python -m ringloom.launch -n N train_script.py OUT DP PP SCHEDULE M`: run_training from
Python with a parallel layout (what a user's own script does)."""
import sys

from ringloom.train.config import TrainConfig
from ringloom.train.trainer import run_training

out, dp, pp, schedule, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
run_training(TrainConfig(preset="tiny", steps=3, batch_size=8, seq_len=24, corpus_bytes=200_000, eval_every=0,
                         eval_batches=2, log_every=1, out=out, progress=False, sample_len=0, dp=dp, pp=pp,
                         schedule=schedule, micro_batches=m, lr=1e-3, warmup=0))
