"""ParallelEngine: one rank's share of dp x pp training, driven one optimizer step at a time.

    pg = ringloom.distributed.init()
    mesh = DeviceMesh(dp=2, pp=2, world=pg)
    engine = ParallelEngine(config, mesh, schedule="1f1b", micro_batches=4, lr=1e-3)
    loss = engine.train_step(inputs, targets)     # this dp rank's rows [B/dp, T] of the global batch

A step: split the rows into micro-batches (in order: which sequences form the global batch
never depends on the layout), run this pipeline rank's action list (schedules.py) on its
chunk models, reduce gradients over the dp group in buckets while backward runs
(data_parallel.py), sum the tied wte gradient between first and last stage, compute the
global gradient norm, and step the optimizer (AdamW, or ZeRO's ShardedAdamW).

``zero`` (over the dp ranks; zero.py, zero3.py): 1 shards the optimizer state, 2 also frees
the full gradients once reduce-scattered, 3 also shards the parameters, which are gathered
per layer as the schedule reaches it.

Every micro-batch's loss is scaled by 1 / (targets in the whole global batch), so the
gradients summed over micro-batches and dp ranks equal single-process training's on the
whole batch, and the returned loss is the global batch's mean loss on every rank.

Beyond plain all-reduce: ``compression`` (parallel/compression.py) compresses the
dp gradient reduction; ``local_sgd=H`` drops the per-step gradient reduction instead: each
dp replica steps alone on its own rows (its local mean loss, its own clipping norm) and
the replicas average their parameters (and, with ``local_sgd_moments``, AdamW's m and v)
every H steps (Stich 2019, "Local SGD converges fast and communicates little"; Lin et al.
2020, post-local SGD). ``comm_bytes_last_step``: the payload this rank handed to the dp
collectives in the last step.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Sequence

import numpy as np

from .. import _C
from ..models import ModelConfig, build_model
from ..optim import AdamW
from .exchange import check_gradient_exchange
from .data_parallel import DEFAULT_BUCKET_MB, GradReducer, broadcast_parameters
from .mesh import DeviceMesh
from .partition import balanced_split, check_split, stage_blocks
from .schedule_runner import ScheduleRunner
from .schedules import make_schedule
from .trace import Timeline
from .zero import ShardedAdamW, memory_per_rank
from .zero3 import ParameterGather, layer_units

TIED = "embedding.wte.weight"


def sum_f64(group: Any, values: Sequence[float]) -> np.ndarray:
    """Exact-order float64 sum over a group: all-gather the bytes, add on the host in rank
    order (so every rank gets bit-identical results)."""
    a = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    if group is None or group.size == 1:
        return a
    raw = a.view(np.uint8)
    out = np.empty(raw.size * group.size, np.uint8)
    group.all_gather(out, raw.copy())
    return out.view(np.float64).reshape(group.size, -1).sum(axis=0)


class ParallelEngine:
    def __init__(self, config: ModelConfig, mesh: DeviceMesh, *, device: str = "cpu", dtype: Any = None,
                 seed: int = 0, schedule: str = "1f1b", micro_batches: int | None = None, chunks: int | None = None,
                 stage_layers: Sequence[int] | None = None, zero: int = 0,
                 bucket_mb: float = DEFAULT_BUCKET_MB, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.1, max_grad_norm: float = 0.0, trace: bool = False,
                 ignore_index: int = -100, compression: str | None = None, local_sgd: int = 0,
                 local_sgd_moments: bool = False):
        self.config, self.mesh = config, mesh
        self.ignore_index = ignore_index
        p, r = mesh.pp, mesh.pp_index
        self.micro_batches = int(micro_batches or p)
        v = 1 if schedule != "interleaved" else int(chunks or 2)
        self.schedule = make_schedule(schedule, p, self.micro_batches, v)
        self.actions = self.schedule.actions[r]
        S = p * v
        counts = check_split(config, stage_layers, S) if stage_layers else balanced_split(config, S)
        self.stage_layers = counts
        blocks = stage_blocks(counts)
        # This rank's chunks: virtual stages r, r + p, r + 2p, ...
        self.stages = [c * p + r for c in range(v)]
        build = self._model_builder(config, mesh, device, dtype, seed, zero, local_sgd)
        self.chunks = [build(blocks=blocks[s], embedding=(s == 0), head=(s == S - 1)) for s in self.stages]
        self.device = self.chunks[0].device
        self.S = S
        sync = (lambda: _C.cuda_synchronize(int(self.device.split(":")[1]))) if self.device != "cpu" else None
        self.trace = Timeline(mesh.rank, sync) if trace else None

        named = [x for m in self.chunks for x in m.parameters()]
        self.named = named
        # The same starting point everywhere: dp rank 0's weights, and the first stage's wte in
        # the last stage's tied copy.
        broadcast_parameters(named, mesh.dp_group, 0)
        self.tied_param = None
        if p > 1 and config.tie_embeddings and (mesh.is_first_stage or mesh.is_last_stage):
            self.tied_param = dict(named)[TIED]
            mesh.tied_group.broadcast(self.tied_param.value, 0)

        # Gradient buckets in the order gradients become final: chunks by their last W, each
        # chunk's layers in reverse.
        last_w = {}
        for i, a in enumerate(self.actions):
            if a.kind == "W":
                last_w[a.chunk] = i
        order = sorted(range(v), key=lambda c: last_w[c])
        ptr_name = {p_.value.data_ptr(): n for n, p_ in named}
        self._layer_params = []  # per chunk, per layer: [Param]
        final_order: list[tuple[str, Any]] = []
        for c, m in enumerate(self.chunks):
            self._layer_params.append([[q for q in layer.params()] for layer in m.layers()])
        for c in order:
            for params in reversed(self._layer_params[c]):
                final_order += [(ptr_name[q.value.data_ptr()], q) for q in params]
        bucket_bytes = bucket_mb * 2**20
        if int(zero) not in (0, 1, 2, 3):
            raise ValueError(f"ParallelEngine: zero must be 0, 1, 2 or 3, got {zero!r}")
        self.zero = int(zero) if mesh.dp > 1 else 0
        self.local_sgd = int(local_sgd) if mesh.dp > 1 else 0
        self.local_sgd_moments = bool(local_sgd_moments)
        self.comm_bytes_last_step = 0
        check_gradient_exchange(bool(zero), compression, int(local_sgd))
        dp_group = mesh.dp_group
        opt_kw = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
        self.max_grad_norm = float(max_grad_norm)
        self.reducers: list[GradReducer] = []
        self.sharded = None
        self.optimizer = None
        if self.zero:
            # The tied wte copy is summed between stages after the dp reduction, which needs
            # the whole tensor: it stays replicated (all-reduce + plain AdamW).
            shard = [(n, q) for n, q in final_order if not (self.tied_param is not None and n == TIED)]
            repl = [(n, q) for n, q in final_order if self.tied_param is not None and n == TIED]
            units = None
            if self.zero == 3:   # one bucket per layer: the unit gathered before the layer runs
                sharded_names = {n for n, _ in shard}
                units = [[(ptr_name[q.value.data_ptr()], q) for q in params
                          if ptr_name[q.value.data_ptr()] in sharded_names]
                         for c in order for params in reversed(self._layer_params[c])]
            rs = GradReducer(shard, dp_group, bucket_bytes, "reduce_scatter", self.trace,
                             release_grads=self.zero >= 2, units=units)
            self.reducers.append(rs)
            self.sharded = ShardedAdamW(rs, **opt_kw, stage=self.zero)
            if repl:
                self.reducers.append(GradReducer(repl, dp_group, bucket_bytes, "all_reduce", self.trace))
                self.optimizer = AdamW(repl, **opt_kw)
        else:
            if mesh.dp > 1 and not self.local_sgd:
                self.reducers.append(GradReducer(final_order, dp_group, bucket_bytes, "all_reduce", self.trace,
                                                 compression=compression))
            self.optimizer = AdamW(named, **opt_kw)
        if any(not r.release_grads for r in self.reducers):
            for m in self.chunks:
                m.grads_pinned_by = "the data-parallel reducer (each gradient is a view of its bucket)"
        self.gather = None
        if self.zero == 3:
            self.gather = ParameterGather(self.sharded, self.chunks,
                                          layer_units(self.chunks, self.sharded.reducer, config.tie_embeddings))
        self.step_count = 0
        self.last_grad_norm = float("nan")
        self.last_step_skipped = False

    @staticmethod
    def _model_builder(config: ModelConfig, mesh: DeviceMesh, device: str, dtype: Any, seed: int, zero: bool,
                       local_sgd: int) -> Callable[..., Any]:
        """build_model, or with mesh.tp > 1 build_tp_model over the mesh's tp group."""
        if mesh.tp == 1:
            return lambda **kw: build_model(config, device, dtype, seed, **kw)
        from .tensor_parallel import build_tp_model, kv_group_for
        from .tp_layout import TPLayout

        if zero or local_sgd:
            raise ValueError("ParallelEngine: tensor parallelism (tp > 1) cannot be combined with ZeRO or local SGD")
        kv = kv_group_for(mesh.tp_group, TPLayout(config, mesh.tp, mesh.tp_index))
        return lambda **kw: build_tp_model(config, mesh.tp_group, device, dtype, seed, kv_group=kv, **kw)

    # ---------------------------------------------------------------- parameters
    def parameters(self) -> list[tuple[str, Any]]:
        return list(self.named)

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of parameters, gradients and optimizer state this rank holds now
        (zero.memory_per_rank)."""
        opts = [o for o in (self.sharded, self.optimizer) if o is not None]
        return memory_per_rank(self.named, opts, self.reducers)

    def full_parameters(self):
        """Context in which every parameter of this rank's chunks has its values (under
        ZeRO-3 they are gathered: a collective over the dp group; else nothing to do)."""
        return self.gather.gathered_all() if self.gather is not None else nullcontext()

    def state_dict(self) -> dict[str, np.ndarray]:
        """This rank's parameters (fp32 NumPy copies), by name. A collective under ZeRO-3."""
        out: dict[str, np.ndarray] = {}
        with self.full_parameters():
            for m in self.chunks:
                out.update(m.state_dict())
        return out

    def _names_of(self, pp_index: int) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of the parameters pipeline rank ``pp_index`` holds, the tied wte
        copy of the last stage left out, sorted by name."""
        from ..models import param_specs

        p, S = self.mesh.pp, self.S
        blocks = set()
        emb = head = False
        for c in range(len(self.stages)):
            s = c * p + pp_index
            blocks.update(stage_blocks(self.stage_layers)[s])
            emb |= s == 0
            head |= s == S - 1
        out = []
        for name, shape, _ in param_specs(self.config):
            part = name.split(".")[0]
            if (part == "embedding" and emb) or (part == "head" and head) or \
                    (part == "blocks" and int(name.split(".")[1]) in blocks):
                out.append((name, tuple(shape)))
        return sorted(out)

    def gather_full_state(self) -> dict[str, np.ndarray] | None:
        """Every parameter of the model, fp32 NumPy, on world rank 0 (None elsewhere): dp
        rank 0 of each stage sends its share (tp rank 0, after its tp group gathered the
        slices). A collective: every rank must call it."""
        mesh = self.mesh
        if mesh.world.size == 1:
            return self.state_dict()
        mine = self.state_dict()
        if mesh.rank == 0:
            state = dict(mine)
            for r in range(1, mesh.pp):
                src = mesh.pp_ranks(0, 0)[r]
                for name, shape in self._names_of(r):
                    if name in state:
                        continue
                    buf = np.empty(shape, np.float32)
                    mesh.world.recv(buf, src)
                    state[name] = buf
            return state
        if mesh.dp_index == 0 and mesh.tp_index == 0:
            works = [mesh.world.send(np.ascontiguousarray(mine[name], np.float32), 0, async_op=True)
                     for name, _ in self._names_of(mesh.pp_index)]
            for w in works:
                w.wait()
        return None

    # ---------------------------------------------------------------- one step
    def _global_count(self, targets: np.ndarray) -> int:
        local = int(np.count_nonzero(np.asarray(targets) != self.ignore_index))
        return int(round(sum_f64(self.mesh.dp_group, [local])[0]))

    def train_step(self, inputs: np.ndarray, targets: np.ndarray, lr: float | None = None,
                   accept: Callable[[float, float], bool] | None = None) -> float:
        """One optimizer step on this dp rank's rows [B/dp, T] of the global batch (every
        stage of a replica passes the same rows). Returns the global batch's mean loss.

        ``accept(loss, grad_norm)`` decides, before any update, whether the step is applied
        (it may raise to stop the run); every rank sees the same global loss and norm, so
        all ranks decide alike. ``self.last_step_skipped`` says what happened."""
        from ..data import split_micro_batches

        mesh, m = self.mesh, self.micro_batches
        micro = split_micro_batches(np.asarray(inputs), np.asarray(targets), m)
        tl = self.trace
        if tl is not None:
            tl.step_begin()
        local_count = int(np.count_nonzero(np.asarray(targets) != self.ignore_index))
        if self.local_sgd:
            count = local_count   # each replica descends its own rows' mean loss
        else:
            count = self._global_count(targets) if mesh.is_last_stage else 0
        scale = 1.0 / max(count, 1)
        for red in self.reducers:   # first: under ZeRO-2/3 it gives the gradients their memory back
            red.reset(self.step_count)
        for mdl in self.chunks:
            mdl.zero_grad()
        loss_sum = self._run_schedule(micro, scale)
        with _span(tl, "grad sync", "comm"):
            for red in self.reducers:
                red.finish()
            if self.tied_param is not None:
                mesh.tied_group.all_reduce(self.tied_param.grad, op="sum")
        norm_t = self._grad_norm()
        # The loss lives on the last stage (on each of its tp ranks: counted once); every rank
        # learns the global mean before updating.
        holds = mesh.is_last_stage and mesh.tp_index == 0
        total = sum_f64(mesh.world, [loss_sum, local_count] if holds else [0.0, 0.0])
        loss = float(total[0] / total[1]) if total[1] else 0.0
        self.last_step_skipped = accept is not None and not accept(loss, self.last_grad_norm)
        if not self.last_step_skipped:
            with _span(tl, "optimizer", "comm"):
                if self.sharded is not None:
                    self.sharded.step(lr=lr, grad_norm=norm_t)
                if self.optimizer is not None:
                    self.optimizer.step(lr=lr, grad_norm=norm_t)
        if self.gather is not None:
            self.gather.check_idle()
        self.step_count += 1
        self.comm_bytes_last_step = sum(red.bytes_last_step for red in self.reducers)
        if self.local_sgd and self.step_count % self.local_sgd == 0:
            with _span(tl, "average parameters", "comm"):
                self.comm_bytes_last_step += self._average_replicas()
        if tl is not None:
            tl.step_end(self.step_count)
        return loss

    def _average_replicas(self) -> int:
        """Local SGD: every dp replica gets the mean of the replicas' fp32 master weights (and
        AdamW moments); returns the payload bytes sent (one fp32 all-reduce)."""
        opt = self.optimizer
        tensors = list(opt._masters)
        if self.local_sgd_moments:
            tensors += opt._m + opt._v
        # One flat buffer on the tensors' own device: on a GPU nothing goes through the host.
        total = sum(t.numel() for t in tensors)
        flat = _C.empty([total], "float32", tensors[0].device)
        pos = 0
        for t in tensors:
            flat.narrow0(pos, t.numel()).copy_(t.reshape([t.numel()]))
            pos += t.numel()
        self.mesh.dp_group.all_reduce(flat, op="avg")
        pos = 0
        for t in tensors:
            t.copy_(flat.narrow0(pos, t.numel()).reshape(list(t.shape)))
            pos += t.numel()
        for w, v in zip(opt._masters, opt._compute):   # bf16 compute copies of the masters
            v.copy_(w.to(v.dtype))
        return 4 * total

    def _grad_norm(self) -> Any:
        """The global gradient norm as a 1-element fp32 tensor on the device. Each logical
        gradient element is counted once: replicated ones by dp rank 0 only, ZeRO shards by
        their owner, the tied wte by the first stage only, tensor-parallel slices by their
        tp rank (Model.norm_grads)."""
        mesh = self.mesh
        if self.local_sgd:
            # Each replica clips by its own gradient's norm: sum over its pipeline stages.
            grads = [q.grad for n, q in self.named if not (n == TIED and self.tied_param is not None
                                                          and not mesh.is_first_stage)]
            g = float(np.asarray(_C.ops.grad_norm(grads).numpy()).reshape(-1)[0])
            group = mesh.pp_fwd_group if mesh.pp > 1 else None
            self.last_grad_norm = float(np.sqrt(sum_f64(group, [g * g])[0]))
            t = _C.from_numpy(np.array([self.last_grad_norm], np.float32))
            return t.to(self.device)
        sq = 0.0
        if self.sharded is not None:
            sq += self.sharded.local_sq_norm()
        if mesh.dp_index == 0:
            grads = []
            if self.sharded is None:
                grads = [g for m in self.chunks for n, g in m.norm_grads()
                         if not (n == TIED and self.tied_param is not None and not mesh.is_first_stage)]
            elif self.tied_param is not None and mesh.is_first_stage:
                grads = [self.tied_param.grad]
            if grads:
                g = float(np.asarray(_C.ops.grad_norm(grads).numpy()).reshape(-1)[0])
                sq += g * g
        total = sum_f64(mesh.world, [sq])[0]
        self.last_grad_norm = float(np.sqrt(total))
        t = _C.from_numpy(np.array([self.last_grad_norm], np.float32))
        return t.to(self.device)

    def _run_schedule(self, micro: list[tuple[np.ndarray, np.ndarray]], scale: float) -> float:
        return ScheduleRunner(self, micro, scale).run()

    def _layer_final(self, chunk: int, layer: int) -> None:
        for red in self.reducers:
            red.params_done(self._layer_params[chunk][layer])

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, batches) -> float:
        """Mean over ``batches`` (this dp rank's rows of each global val batch) of each
        global batch's mean loss; forward only, the same on every rank."""
        mesh = self.mesh
        p, S = mesh.pp, self.S
        sums: list[float] = []
        counts: list[float] = []
        sends: list[Any] = []
        for ids, tgt in batches:
            ids, tgt = np.asarray(ids), np.asarray(tgt)
            loss, cnt = 0.0, 0
            for c, model in enumerate(self.chunks):
                s = self.stages[c]
                x = ids
                if s > 0:
                    x = _C.empty(model.activation_shape(*ids.shape), model.dtype, self.device)
                    mesh.pp_fwd_group.recv(x, (s - 1) % p)
                if s == S - 1:
                    loss = model.loss_sum(model.stage_infer(x, tgt, self.ignore_index))
                    cnt = int(np.count_nonzero(tgt != self.ignore_index))
                else:
                    sends.append(mesh.pp_fwd_group.send(model.stage_infer(x), (s + 1) % p, async_op=True))
            once = mesh.tp_index == 0   # every tp rank of the last stage has the loss
            sums.append(loss if once else 0.0)
            counts.append(cnt if once else 0)
        for w in sends:
            w.wait()
        tot = sum_f64(mesh.world, sums + counts)
        n = len(sums)
        means = [tot[i] / tot[n + i] for i in range(n) if tot[n + i]]
        return float(np.mean(means)) if means else float("nan")


def _span(tl: Timeline | None, name: str, cat: str):
    return tl.span(name, cat) if tl is not None else nullcontext()
