"""Trains one small model with each way of combining the workers' gradients, on the same data
and steps, and logs per-step loss and bytes communicated (notebooks/beyond_allreduce.ipynb).

    python -m ringloom launch -n 2 -m ringloom.bench.comm_methods --out DIR allreduce bf16 topk:0.01 \\
        powersgd:4 qsgd:7 localsgd:4
    python -m ringloom launch -n 3 -m ringloom.bench.comm_methods --out DIR ps    # 2 workers + 1 server

Methods (one process per worker; the global batch is split over the workers as in `ringloom
train`, whose defaults for the schedule, weight decay and clipping are used here too):

  allreduce     data parallel, fp32 gradient all-reduce (ParallelEngine)
  bf16          ... with the gradients all-reduced in bf16 (parallel/compression.py)
  topk:RATIO    ... top-k sparsification with error feedback
  powersgd:R    ... PowerSGD of rank R with error feedback
  qsgd:S        ... QSGD: unbiased stochastic quantisation to S levels per 512 elements
  localsgd:H    local SGD: replicas step alone and average their weights every H steps
  ps            synchronous parameter server (parallel/param_server.py): the last rank
                serves (holds the weights and AdamW state), the others push gradients and
                pull weights; one server, so it needs one more process than the others

Rank 0 (a worker in every method) writes DIR/<method>.jsonl, one line per step:
{"step", "loss" (the global batch's mean), "comm_bytes" (the payload this worker handed to
collectives, the library's count), "seconds"}; for ps also "pushed_bytes" / "pulled_bytes".
A last line {"val_loss": ..., "tokens_per_s": ...} holds the loss of the final weights on
fixed held-out batches and the throughput (global batch tokens over the median step time,
the first quarter of the steps, at most 3, left out as warm-up); rank 0 also prints a table.

On GPUs (--device cuda: rank r uses cuda:LOCAL_RANK modulo the visible GPUs; --backend auto
picks NCCL when every rank has a GPU of its own, else our collectives, whose CUDA tensors go
over CUDA IPC: ranks sharing a GPU must then be clients of the CUDA Multi-Process Service),
e.g. the tokens/s of each method on 4 GPUs:

    ringloom launch -n 4 -m ringloom.bench.comm_methods --device cuda --preset gpt2-124m \
        --batch-size 64 --seq-len 1024 --steps 30 --out DIR allreduce bf16 topk:0.01 powersgd:4 qsgd:7 localsgd:4
    ringloom launch -n 4 -m ringloom.bench.comm_methods --device cuda ... --out DIR ps   # 3 workers + 1 server
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

DP_METHODS = ("allreduce", "bf16", "topk", "powersgd", "qsgd", "localsgd")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m ringloom.bench.comm_methods", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("methods", nargs="+", help="allreduce | bf16 | topk:RATIO | powersgd:R | qsgd:S | localsgd:H | ps")
    ap.add_argument("--out", required=True, help="directory for <method>.jsonl")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--n-layer", type=int, default=None, help="override the preset's layer count")
    ap.add_argument("--n-embd", type=int, default=None, help="override the preset's width")
    ap.add_argument("--n-head", type=int, default=None, help="override the preset's head count")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8, help="global batch (sequences)")
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--corpus-bytes", type=int, default=200_000, help="size of the built-in corpus")
    ap.add_argument("--eval-batches", type=int, default=4)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: one GPU per rank (cuda:LOCAL_RANK), bf16 compute")
    ap.add_argument("--backend", default="auto",
                    help="process-group backend (auto: ringloom.distributed.backend_for's rule) (default: %(default)s)")
    return ap.parse_args(argv)


def _device(args: argparse.Namespace) -> str:
    if args.device == "cpu":
        return "cpu"
    from .. import _C

    if not (_C.has_cuda_build and _C.cuda_available()):
        raise SystemExit("comm_methods: --device cuda needs a CUDA build of ringloom and a visible GPU")
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % _C.cuda_device_count()}"


def _summary(rows: list[dict], args: argparse.Namespace) -> dict:
    """The tokens/s of a method's run: global batch tokens over the median step time."""
    steps = [r["seconds"] for r in rows if "seconds" in r]
    warm = min(3, len(steps) // 4)
    return {"tokens_per_s": args.batch_size * args.seq_len / float(np.median(steps[warm:]))}


def _model_config(args: argparse.Namespace, vocab_size: int) -> Any:
    from ..models import get_preset

    over = {k: v for k, v in (("n_layer", args.n_layer), ("n_embd", args.n_embd), ("n_head", args.n_head))
            if v is not None}
    return get_preset(args.preset, vocab_size=vocab_size, **over)


def _run_dp(method: str, args: argparse.Namespace, config: Any, data: Any, pg: Any, schedule: Any) -> list[dict]:
    from ..data import TokenLoader, ValLoader
    from ..parallel import DeviceMesh, ParallelEngine

    name, _, arg = method.partition(":")
    kw: dict[str, Any] = {}
    if name in ("bf16", "topk", "powersgd", "qsgd"):
        kw["compression"] = method
    elif name == "localsgd":
        kw["local_sgd"] = int(arg)
    mesh = DeviceMesh(pg.size, 1, pg)
    engine = ParallelEngine(config, mesh, device=_device(args), seed=args.seed, lr=args.lr,
                            weight_decay=args.weight_decay, max_grad_norm=args.grad_clip, **kw)
    loader = TokenLoader(data.train_path, args.batch_size, args.seq_len, seed=args.seed, rank=pg.rank,
                         world=pg.size)
    rows = []
    for k in range(args.steps):
        ids, tgt = loader.next_batch()
        t0 = time.perf_counter()
        loss = engine.train_step(ids, tgt, lr=schedule(k))
        rows.append({"step": k + 1, "loss": loss, "comm_bytes": engine.comm_bytes_last_step,
                     "seconds": time.perf_counter() - t0})
    val = ValLoader(data.val_path, args.batch_size, args.seq_len, args.eval_batches, rank=pg.rank, world=pg.size)
    rows.append({"val_loss": engine.evaluate(val), **_summary(rows, args)})
    return rows


def _run_ps(args: argparse.Namespace, config: Any, data: Any, pg: Any, schedule: Any) -> list[dict]:
    from ..data import TokenLoader, ValLoader
    from ..parallel import ParameterServer, PSLayout, PSWorker

    layout = PSLayout(pg.size, servers=1)
    if layout.is_server(pg.rank):
        # lr_at(update index) is the same schedule the data-parallel runs step with.
        ParameterServer(config, pg, layout, args.steps, mode="sync", seed=args.seed, lr=args.lr,
                        weight_decay=args.weight_decay, max_grad_norm=args.grad_clip, lr_at=schedule,
                        device=_device(args)).serve()
        return []
    worker = PSWorker(config, pg, layout, mode="sync", seed=args.seed, device=_device(args))
    loader = TokenLoader(data.train_path, args.batch_size, args.seq_len, seed=args.seed, rank=pg.rank,
                         world=layout.workers)
    # What a worker moves per step, from the tensor sizes: it pushes its fp32 gradient (the
    # whole flat parameter vector, split over the servers) and pulls the fp32 weights back.
    pushed = 4 * worker.total
    rows = []
    for k in range(args.steps):
        ids, tgt = loader.next_batch()
        t0 = time.perf_counter()
        loss = worker.train_step(ids, tgt)
        rows.append({"step": k + 1, "loss": loss, "comm_bytes": worker.comm_bytes_last_step,
                     "pushed_bytes": pushed, "pulled_bytes": worker.comm_bytes_last_step - pushed,
                     "seconds": time.perf_counter() - t0})
    if pg.rank == 0:  # every worker holds the pulled weights: worker 0 evaluates them alone
        val = ValLoader(data.val_path, args.batch_size, args.seq_len, args.eval_batches)
        rows.append({"val_loss": float(np.mean([worker.model.loss(x, y) for x, y in val])), **_summary(rows, args)})
    return rows


def main(argv: list[str] | None = None) -> None:
    import ringloom.distributed as dist

    from ..data import prepare_data
    from ..optim import LRSchedule

    args = _parse(argv)
    for m in args.methods:
        if m != "ps" and m.partition(":")[0] not in DP_METHODS:
            raise SystemExit(f"comm_methods: unknown method {m!r} (allreduce, bf16, topk:RATIO, powersgd:R, "
                             "qsgd:S, localsgd:H or ps)")
    backend = dist.backend_for(args.device, args.backend)
    pg = dist.world() if dist.is_initialized() else dist.init(backend=backend)
    if pg.rank == 0:
        os.makedirs(args.out, exist_ok=True)
    else:
        pg.barrier()  # rank 0 tokenizes and caches the corpus first; the others reuse it
    _, data = prepare_data(None, "byte", corpus_bytes=args.corpus_bytes)
    if pg.rank == 0:
        pg.barrier()
    config = _model_config(args, data.vocab_size)
    # The trainer's schedule: warm-up, then cosine decay to lr / 10.
    schedule = LRSchedule("cosine", args.lr, args.steps, min(args.warmup, args.steps), args.lr / 10)
    table = []
    for m in args.methods:
        rows = _run_ps(args, config, data, pg, schedule) if m == "ps" else _run_dp(m, args, config, data, pg,
                                                                                   schedule)
        if pg.rank == 0:
            with open(os.path.join(args.out, f"{m.replace(':', '-')}.jsonl"), "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            mb = float(np.mean([r["comm_bytes"] for r in rows if "comm_bytes" in r])) / 1e6
            table.append((m, rows[-1]["tokens_per_s"], mb, rows[-1]["val_loss"]))
        pg.barrier()
    if pg.rank == 0:
        print(f"{'method':14s} {'tokens/s':>12s} {'MB/step/worker':>15s} {'val loss':>9s}  ({pg.size} ranks, {args.device})")
        for m, tps, mb, val in table:
            print(f"{m:14s} {tps:12,.0f} {mb:15.3f} {val:9.4f}")


if __name__ == "__main__":
    main()
