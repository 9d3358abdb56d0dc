"""`ringloom launch -n N --max-restarts K kill_script.py KILL_RANK KILL_STEP TRAIN_ARGS...`:
`ringloom train TRAIN_ARGS` in every rank, except that on the first attempt
(RINGLOOM_RESTART_COUNT 0) rank KILL_RANK SIGKILLs itself right after finishing step
KILL_STEP: a rank dying mid-run, as an OOM kill would. Every rank appends "attempt step"
per step it runs to OUT/steps.rankR.txt, so the test can see where each attempt started."""
import os
import signal
import sys

from ringloom.cli import main
from ringloom.train.trainer import Trainer

kill_rank, kill_step = int(sys.argv[1]), int(sys.argv[2])
train_args = sys.argv[3:]
out = train_args[train_args.index("--out") + 1]
attempt, rank = os.environ["RINGLOOM_RESTART_COUNT"], os.environ["RANK"]
original = Trainer.train_step


def train_step(self):
    loss = original(self)
    with open(os.path.join(out, f"steps.rank{rank}.txt"), "a") as f:
        f.write(f"{attempt} {self.step}\n")
    if attempt == "0" and rank == str(kill_rank) and self.step == kill_step:
        os.kill(os.getpid(), signal.SIGKILL)
    return loss


Trainer.train_step = train_step
sys.exit(main(["train", *train_args]))
