"""Runs one rank's action list of a pipeline step (parallel/schedules.py) on its chunk models.

Each action kind has one handler (the table in ScheduleRunner.__init__); the runner walks
the list and calls them. Sends are issued asynchronously and waited for at the end; recvs
block. Activations and gradients in flight are kept per (micro-batch, chunk).

A B directly followed by its own W becomes one per-layer backward: each layer's gradients
are final (and its gradient bucket can go) as early as possible; the W is then a no-op.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import numpy as np

from .. import _C
from .schedules import Action


class ScheduleRunner:
    """One step of ``engine``'s action list over ``micro`` [(ids, targets)] with loss scale
    ``scale``; ``run()`` returns the sum of this rank's per-position losses (last stage)."""

    def __init__(self, engine: Any, micro: list[tuple[np.ndarray, np.ndarray]], scale: float):
        self.engine, self.micro, self.scale = engine, micro, scale
        self.mesh, self.tl = engine.mesh, engine.trace
        self.out_f: dict[tuple[int, int], Any] = {}   # activations waiting to be sent
        self.in_f: dict[tuple[int, int], Any] = {}    # received activations
        self.in_b: dict[tuple[int, int], Any] = {}    # received output gradients
        self.out_b: dict[tuple[int, int], Any] = {}   # input gradients waiting to be sent
        self.w_done = [0] * len(engine.chunks)        # W halves done per chunk
        self.fused: set[tuple[int, int]] = set()      # B+W pairs run as one backward
        self.sends: list[Any] = []
        self.loss_sum = 0.0
        self.handlers: dict[str, Callable[[int, Action], None]] = {
            "F": self.forward, "B": self.backward_input, "W": self.backward_weight,
            "SEND_F": self.send_activation, "RECV_F": self.recv_activation,
            "SEND_B": self.send_gradient, "RECV_B": self.recv_gradient}

    def run(self) -> float:
        for i, a in enumerate(self.engine.actions):
            self.handlers[a.kind](i, a)
        for w in self.sends:
            w.wait()
        return self.loss_sum

    # ------------------------------------------------------------------ helpers
    def _span(self, name: str, cat: str):
        return self.tl.span(name, cat) if self.tl is not None else nullcontext()

    @staticmethod
    def _name(kind: str, a: Action) -> str:
        return f"{kind}{a.mb}" + (f".{a.chunk}" if a.chunk else "")

    def _buffer(self, a: Action) -> Any:
        b, T = self.micro[a.mb][0].shape
        eng = self.engine
        return _C.empty([b, T, eng.config.n_embd], eng.chunks[0].dtype, eng.device)

    def _weights_backward(self, a: Action, layer_backward: Callable[[Any, int], None]) -> None:
        """Every layer of chunk a.chunk in reverse; on the last micro-batch each layer's
        gradients are final as soon as its backward is done."""
        last = self.w_done[a.chunk] == self.engine.micro_batches - 1
        layers = self.engine.chunks[a.chunk].layers()
        for li in range(len(layers) - 1, -1, -1):
            layer_backward(layers[li], li)
            if last:
                self.engine._layer_final(a.chunk, li)
        self.w_done[a.chunk] += 1

    # ------------------------------------------------------------------ compute
    def forward(self, i: int, a: Action) -> None:
        eng, key = self.engine, (a.mb, a.chunk)
        s = eng.stages[a.chunk]
        ids, tgt = self.micro[a.mb]
        x = ids if s == 0 else self.in_f.pop(key)
        last = s == eng.S - 1
        with self._span(self._name("F", a), "compute"):
            y = eng.chunks[a.chunk].stage_forward(a.mb, x, targets=tgt if last else None, grad_scale=self.scale,
                                                  ignore_index=eng.ignore_index)
        if last:
            self.loss_sum += eng.chunks[a.chunk].loss_sum(y)
        else:
            self.out_f[key] = y

    def backward_input(self, i: int, a: Action) -> None:
        eng, key = self.engine, (a.mb, a.chunk)
        dy = self.in_b.pop(key, None)
        acts = eng.actions
        nxt = acts[i + 1] if i + 1 < len(acts) else None
        if nxt is not None and nxt.kind == "W" and (nxt.mb, nxt.chunk) == key:
            self.fused.add(key)
            grad = [dy]

            def both_halves(layer: Any, li: int) -> None:
                grad[0] = layer.backward(a.mb, grad[0])

            with self._span(self._name("B", a) + "+W", "compute"):
                self._weights_backward(a, both_halves)
            dy = grad[0]
        else:
            with self._span(self._name("B", a), "compute"):
                dy = eng.chunks[a.chunk].stage_backward_input(a.mb, dy)
        if eng.stages[a.chunk] > 0:
            self.out_b[key] = dy

    def backward_weight(self, i: int, a: Action) -> None:
        key = (a.mb, a.chunk)
        if key in self.fused:
            self.fused.discard(key)
            return
        with self._span(self._name("W", a), "compute"):
            self._weights_backward(a, lambda layer, li: layer.backward_weight(a.mb))

    # ------------------------------------------------------------------ communication
    def send_activation(self, i: int, a: Action) -> None:
        self.sends.append(self.mesh.pp_fwd_group.send(self.out_f.pop((a.mb, a.chunk)), a.peer, async_op=True))

    def send_gradient(self, i: int, a: Action) -> None:
        self.sends.append(self.mesh.pp_bwd_group.send(self.out_b.pop((a.mb, a.chunk)), a.peer, async_op=True))

    def recv_activation(self, i: int, a: Action) -> None:
        buf = self._buffer(a)
        with self._span(f"recv act {a.mb}", "comm"):
            self.mesh.pp_fwd_group.recv(buf, a.peer)
        self.in_f[(a.mb, a.chunk)] = buf

    def recv_gradient(self, i: int, a: Action) -> None:
        buf = self._buffer(a)
        with self._span(f"recv grad {a.mb}", "comm"):
            self.mesh.pp_bwd_group.recv(buf, a.peer)
        self.in_b[(a.mb, a.chunk)] = buf
