"""A host simulation of the CUDA IPC collectives' protocol (csrc/comm/cuda/ipc_ring.cu,
ipc_tree.cu), for the CPU tests: the kernels' schedules written again step for step in
Python, over the real plans, flag values and round numbering of the C++ core
(ringloom._C.comm.ipc).

Every (rank, channel) block is a generator that yields the condition it waits on; a random
scheduler runs any block whose condition holds, so ranks drift apart the way GPUs do. Each
rank runs its ops in stream order (an op's blocks start when its previous op's blocks all
ended). Buffers are shared NumPy arrays, written the moment a block writes them, so a
missing wait (a read before the producer's write, a slot overwritten while a peer still
reads it) shows up as a wrong result; flags are checked to only ever grow.
"""
from __future__ import annotations

import random
from collections import defaultdict

import numpy as np

from ringloom import _C

ipc = _C.comm.ipc
CHANNELS = ipc.MAX_CHANNELS


class Sim:
    def __init__(self, n: int, region_elems: int, seed: int, favour: float = 0.8):
        self.n = n
        self.favour = favour  # how strongly one rank (changing now and then) is run ahead
        self.region = region_elems
        self.rs = [[np.zeros(region_elems, np.int64) for _ in range(2)] for _ in range(n)]
        self.ag = [[np.zeros(region_elems, np.int64) for _ in range(2)] for _ in range(n)]
        self.ready: dict = defaultdict(int)  # (dst, src, channel) -> value
        self.ack: dict = defaultdict(int)
        self.rounds = [ipc.Rounds() for _ in range(n)]
        self.rng = random.Random(seed)
        self.queues: list[list] = [[] for _ in range(n)]  # per rank: ops (lists of block generators)

    # ---- flags ----
    def set_ready(self, dst: int, src: int, c: int, value: int) -> None:
        assert value > self.ready[dst, src, c], f"ready flag ({dst},{src},{c}) went from {self.ready[dst, src, c]} to {value}"
        self.ready[dst, src, c] = value

    def set_ack(self, dst: int, src: int, c: int, value: int) -> None:
        assert value > self.ack[dst, src, c], f"ack flag ({dst},{src},{c}) went from {self.ack[dst, src, c]} to {value}"
        self.ack[dst, src, c] = value

    def wait_acks(self, me: int, g: int):
        need = ipc.ack_needed(g)
        if need:
            for q in range(self.n):
                for c in range(CHANNELS):
                    if q != me:
                        yield lambda q=q, c=c: self.ack[me, q, c] >= need

    def ack_round(self, me: int, c: int, plan, g: int) -> None:
        for q in range(self.n):
            if q == me:
                continue
            self.set_ack(q, me, c, g)
            if c == 0:
                for cc in range(plan.channels, CHANNELS):
                    self.set_ack(q, me, cc, g)

    # ---- ops: each rank calls these in the same order, as ProcessGroup does ----
    def launch(self, me: int, plan, kernel, **kw) -> None:
        if plan.rounds == 0:
            return
        g0 = self.rounds[me].take(plan.rounds)
        self.queues[me].append([kernel(me, c, plan, g0, **kw) for c in range(plan.channels)])

    def run(self) -> None:
        """Runs every queued op to the end in a random interleaving; fails on a deadlock."""
        active: dict = {}  # (rank, index) -> [generator, condition]
        for r in range(self.n):
            self._start_next(r, active)
        fast = (0, 0)
        while active:
            runnable = [k for k, (gen, cond) in active.items() if cond is None or cond()]
            assert runnable, f"deadlock: {len(active)} blocks wait forever"
            # Mostly run one rank's blocks (and one channel's), so ranks drift far apart.
            if self.rng.random() < 0.02:
                fast = (self.rng.randrange(self.n), self.rng.randrange(CHANNELS))
            fav = [k for k in runnable if k[0] == fast[0]] if self.rng.random() < self.favour else []
            fav2 = [k for k in fav if k[1] == fast[1]]
            key = self.rng.choice(fav2 or fav or runnable)
            gen = active[key][0]
            try:
                active[key][1] = next(gen)
            except StopIteration:
                del active[key]
                if not any(k[0] == key[0] for k in active):
                    self._start_next(key[0], active)

    def _start_next(self, r: int, active: dict) -> None:
        if self.queues[r]:
            for i, gen in enumerate(self.queues[r].pop(0)):
                active[r, i] = [gen, None]

    # ---- the kernels ----
    def ring(self, me, c, plan, g0, *, first, last, inp, out, in_sub=0, out_sub=0, copy=False):
        n, nsub = self.n, plan.nsub
        left, right = (me - 1) % n, (me + 1) % n
        gather = last >= n
        for k in range(plan.rounds):
            g = g0 + k
            slot = g & 1
            yield from self.wait_acks(me, g)
            for j in range(first, last + 1):
                rs_step = j < n
                seg = (me - j - 1) % n if rs_step else (me - 1 - (j - n)) % n
                for s in range(nsub):
                    elem, buf, cnt = plan.piece(k, seg, c, s)
                    if j > first:
                        want = ipc.ready_value(g, j - 1, s, nsub)
                        yield lambda want=want: self.ready[me, left, c] >= want
                    b = slice(buf, buf + cnt)
                    o = slice(elem - out_sub, elem - out_sub + cnt)
                    i = slice(elem - in_sub, elem - in_sub + cnt)
                    if cnt and copy:
                        v = inp[i].copy() if j == n - 1 else self.ag[left][slot][b].copy()
                        if j < last:
                            self.ag[me][slot][b] = v
                        out[o] = v
                    elif cnt and not rs_step:
                        v = self.ag[left][slot][b].copy()
                        if j < last:
                            self.ag[me][slot][b] = v
                        out[o] = v
                    elif cnt:
                        x = inp[i].copy()
                        if j == 0:
                            self.rs[me][slot][b] = x
                        elif j < n - 1:
                            self.rs[me][slot][b] = x + self.rs[left][slot][b]
                        else:
                            v = x + self.rs[left][slot][b]
                            if gather:
                                self.ag[me][slot][b] = v
                            out[o] = v
                    if j < last:
                        self.set_ready(right, me, c, ipc.ready_value(g, j, s, nsub))
            self.ack_round(me, c, plan, g)

    def tree(self, me, c, plan, g0, *, inp, out):
        nsub, n = plan.nsub, self.n
        parent, *children = ipc.tree_node(n, c & 1, me)
        children = [x for x in children if x >= 0]
        for k in range(plan.rounds):
            g = g0 + k
            slot = g & 1
            yield from self.wait_acks(me, g)
            for s in range(nsub):
                elem, buf, cnt = plan.piece(k, 0, c, s)
                for ch in children:
                    want = ipc.ready_value(g, 0, s, nsub)
                    yield lambda ch=ch, want=want: self.ready[me, ch, c] >= want
                b = slice(buf, buf + cnt)
                v = inp[elem:elem + cnt].copy()
                for ch in children:
                    v = v + self.rs[ch][slot][b]
                if parent < 0:
                    self.ag[me][slot][b] = v
                    out[elem:elem + cnt] = v
                    for ch in children:
                        self.set_ready(ch, me, c, ipc.ready_value(g, 1, s, nsub))
                else:
                    self.rs[me][slot][b] = v
                    self.set_ready(parent, me, c, ipc.ready_value(g, 0, s, nsub))
            if parent >= 0:
                for s in range(nsub):
                    elem, buf, cnt = plan.piece(k, 0, c, s)
                    want = ipc.ready_value(g, 1, s, nsub)
                    yield lambda want=want: self.ready[me, parent, c] >= want
                    b = slice(buf, buf + cnt)
                    v = self.ag[parent][slot][b].copy()
                    if children:
                        self.ag[me][slot][b] = v
                    out[elem:elem + cnt] = v
                    for ch in children:
                        self.set_ready(ch, me, c, ipc.ready_value(g, 1, s, nsub))
            self.ack_round(me, c, plan, g)

    def oneshot(self, me, c, plan, g0, *, inp, out):
        nsub, n = plan.nsub, self.n
        for k in range(plan.rounds):
            g = g0 + k
            slot = g & 1
            yield from self.wait_acks(me, g)
            for s in range(nsub):
                elem, buf, cnt = plan.piece(k, 0, c, s)
                self.ag[me][slot][buf:buf + cnt] = inp[elem:elem + cnt]
                for q in range(n):
                    if q != me:
                        self.set_ready(q, me, c, ipc.ready_value(g, 0, s, nsub))
            for s in range(nsub):
                elem, buf, cnt = plan.piece(k, 0, c, s)
                for q in range(n):
                    if q != me:
                        want = ipc.ready_value(g, 0, s, nsub)
                        yield lambda q=q, want=want: self.ready[me, q, c] >= want
                out[elem:elem + cnt] = sum(self.ag[q][slot][buf:buf + cnt] for q in range(n))
            self.ack_round(me, c, plan, g)

    def broadcast(self, me, c, plan, g0, *, root, buf_t):
        nsub, n = plan.nsub, self.n
        pos = (me - root) % n
        left = (me - 1) % n
        right = (me + 1) % n if pos < n - 1 else -1
        for k in range(plan.rounds):
            g = g0 + k
            slot = g & 1
            yield from self.wait_acks(me, g)
            for s in range(nsub):
                elem, buf, cnt = plan.piece(k, 0, c, s)
                if pos > 0:
                    want = ipc.ready_value(g, 0, s, nsub)
                    yield lambda want=want: self.ready[me, left, c] >= want
                b = slice(buf, buf + cnt)
                if pos == 0:
                    self.ag[me][slot][b] = buf_t[elem:elem + cnt]
                else:
                    v = self.ag[left][slot][b].copy()
                    if right >= 0:
                        self.ag[me][slot][b] = v
                    buf_t[elem:elem + cnt] = v
                if right >= 0:
                    self.set_ready(right, me, c, ipc.ready_value(g, 0, s, nsub))
            self.ack_round(me, c, plan, g)
