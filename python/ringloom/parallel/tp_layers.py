"""Tensor-parallel layers with sequence parallelism, composed from ringloom's ops.

Each layer has the slot protocol of csrc/layers/layer.h (forward / backward_input /
backward_weight / infer / release / slots / params), so :class:`~ringloom.models.Model`
and the pipeline executor drive them like the C++ layers. R = tp ranks of one group;
N = B * T tokens of a micro-batch.

Between layers the residual stream is sequence-parallel (Korthikanti et al. 2022): rank r
holds tokens [r N/R, (r+1) N/R) of the flattened batch, shaped [B, T/R, C]. The norms and
residual adds run on that shard, so their activations divide by R too. A block:

  h1_r = norm1(x_r)                     shard
  h1   = all_gather(h1_r)               [B, T, C]          (g: all-gather)
  qkv  = h1 Wqkv_r^T                    this rank's heads  (column-parallel)
  att  = attention(rope(qkv))           [B, T, heads_r, D]
  x2_r = x_r + reduce_scatter(att Wo_r^T)                  (row-parallel; g-bar)
  ... the MLP half alike: fc column-parallel (for SwiGLU each rank keeps its slice of
  gate and of up, packed), proj row-parallel.

Backward mirrors it: an all-gather of the incoming gradient where forward reduce-scattered
and a reduce-scatter where forward all-gathered. Only the shards h1_r, h2_r are saved; the
full h1, h2 that the weight gradients need are all-gathered again during backward_input
(asynchronously: the transfers overlap the input-gradient GEMMs and attention backward),
so no [B, T, C] tensor outlives its use in forward. ``backward`` (both halves at once)
also runs each input gradient's reduce-scatter while the weight-gradient GEMMs run; the
results are the same bits as backward_input + backward_weight.

Gradients: sharded parameters get their own slice's gradient. Replicated parameters
whose gradient comes from this rank's tokens only (norm gains and biases) are summed over
the tp group in backward_weight (one all-reduce of a flat buffer per layer and
micro-batch, issued at the end of backward_input); the row-parallel biases and wpe get
their gradient from the all-gathered full upstream gradient, identical on every rank. So
after backward_weight every gradient is final, as the data-parallel reducer expects.

The embedding and the head are vocabulary-parallel: the embedding looks up only ids in its
slice (ops.embedding_shard_forward) and reduce-scatters the partial rows; the head
multiplies by its slice of the output weight and computes the cross-entropy from
per-slice statistics (ops/cross_entropy_shard.h), so no rank holds a full row of logits.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _C
from .tp_layout import TPLayout
from .tp_parts import (Linear, Norm, Slots, TPComm, TPParam, attention_backend, check_shard, finish_replicated,
                       make_param, weight_grad)

ops = _C.ops


class _Grads:
    """The gradient half of the Layer interface (csrc/layers/layer.h) for layers that always
    add to .grad: zero_grad, replace_grads_next (= zero_grad), release_grads, and
    _grads_ready() at the top of each backward, which gives released gradients zeroed memory."""

    def zero_grad(self) -> None:
        for p in self.params():
            if not p.grad.has_memory:
                p.grad.allocate_storage_()
            p.grad.zero_()

    replace_grads_next = zero_grad  # the next backward's gradients replace .grad

    def release_grads(self) -> None:
        for p in self.params():
            p.grad.release_storage_()

    def _grads_ready(self) -> None:
        for p in self.params():
            if not p.grad.has_memory:
                p.grad.allocate_storage_()
                p.grad.zero_()


class TPEmbedding(_Grads):
    """Vocabulary-parallel token embedding (+ replicated wpe for GPT-2). ids [B, T] in,
    sequence-parallel shard [B, T/R, C] out."""

    kind = "Embedding"

    def __init__(self, layout: TPLayout, group: Any, dtype: Any, device: str):
        c = layout.config
        self.layout, self.comm = layout, TPComm(group, layout)
        self.dtype, self.device = dtype, device
        self.start, end = layout.vocab_range()
        self.vocab_size, self.n_embd, self.max_seq_len = c.vocab_size, c.n_embd, c.max_seq_len
        self.wte = make_param("wte.weight", [end - self.start, c.n_embd], dtype, device, True)
        self.wpe = make_param("wpe.weight", [c.max_seq_len, c.n_embd], dtype, device, True) if c.learned_positions else None
        self._slots = Slots("Embedding")

    def params(self) -> list[TPParam]:
        return [self.wte] + ([self.wpe] if self.wpe is not None else [])

    def _run(self, ids: Any) -> Any:
        T, R = ids.shape[1], self.layout.tp
        if T % R:
            raise ValueError(f"Embedding.forward: the sequence length {T} is not a multiple of tp ({R}); sequence "
                             "parallelism splits each micro-batch's tokens evenly over the tp ranks")
        if T > self.max_seq_len:
            raise ValueError(f"Embedding.forward: sequence length {T} exceeds the model's maximum of "
                             f"{self.max_seq_len} positions")
        # wpe is added by one rank only, so the reduce-scatter's sum holds it once.
        wpe = self.wpe.value if self.wpe is not None and self.layout.rank == 0 else None
        part = ops.embedding_shard_forward(ids, self.wte.value, wpe, self.start)
        return self.comm.scatter(part)

    def forward(self, slot: int, ids: Any) -> Any:
        self._slots.check_free(slot)
        y = self._run(ids)
        self._slots.store(slot, {"ids": ids})
        return y

    def infer(self, ids: Any) -> Any:
        return self._run(ids)

    def backward_input(self, slot: int, dy: Any) -> None:
        s = self._slots.take(slot, "F", "backward_input")
        self._grads_ready()
        s["dy"] = self.comm.gather(dy, async_op=True)  # waited for in backward_weight
        self._slots.input_done(slot)
        return None

    def backward_weight(self, slot: int) -> None:
        s = self._slots.take(slot, "I", "backward_weight")
        dy = s["dy"].wait()
        # Every rank has the full dy: its wpe gradient is complete and the same everywhere.
        ops.embedding_shard_backward(s["ids"], dy, self.wte.grad, self.wpe.grad if self.wpe is not None else None,
                                     self.start)
        self.release(slot)

    def backward(self, slot: int, dy: Any) -> None:
        self.backward_input(slot, dy)
        self.backward_weight(slot)

    def release(self, slot: int) -> None:
        self._slots.map.pop(slot, None)

    def slots(self) -> list[int]:
        return sorted(self._slots.map)


class TPBlock(_Grads):
    """One pre-norm decoder block (csrc/layers/transformer_block.h), heads and hidden width
    split over the tp group, sequence-parallel outside attention and MLP."""

    kind = "TransformerBlock"

    def __init__(self, layout: TPLayout, group: Any, dtype: Any, device: str, kv_group: Any = None):
        c = layout.config
        self.layout, self.comm, self.config = layout, TPComm(group, layout), c
        self.dtype, self.device = dtype, device
        self.kv_group = kv_group  # the ranks sharing this rank's replicated kv heads
        C, D, h, hk, f = c.n_embd, c.head_dim, layout.heads, layout.kv_heads, layout.hidden
        self.ln1 = Norm("ln1", c.norm, C, c.norm_eps, dtype, device)
        self.qkv = Linear("attn.qkv", C, (h + 2 * hk) * D, c.bias, dtype, device)
        self.proj = Linear("attn.proj", h * D, C, c.bias, dtype, device)
        self.ln2 = Norm("ln2", c.norm, C, c.norm_eps, dtype, device)
        self.fc = Linear("mlp.fc", C, 2 * f if c.mlp == "swiglu" else f, c.bias, dtype, device)
        self.down = Linear("mlp.proj", f, C, c.bias, dtype, device)
        # Gradients summed over the group in backward_weight: norm gains and biases.
        self._repl = self.ln1.params() + self.ln2.params()
        self._slots = Slots("TransformerBlock")
        self.attention_backend = None  # "ours" | "cudnn" | "auto"; None: the process-wide setting

    def params(self) -> list[TPParam]:
        return (self.ln1.params() + self.qkv.params() + self.proj.params() + self.ln2.params() + self.fc.params()
                + self.down.params())

    def _row_bias(self, lin: Linear) -> Any:
        # A row-parallel projection's output is a partial sum: one rank adds the bias.
        return lin.bias.value if lin.bias is not None and self.layout.rank == 0 else None

    def _run(self, x: Any, s: dict | None) -> Any:
        c, L = self.config, self.layout
        B, Ts, C = x.shape
        T, h, hk, D = Ts * L.tp, L.heads, L.kv_heads, c.head_dim
        h1s, n1 = self.ln1.forward(x)
        h1 = self.comm.gather(h1s)
        qkv = ops.matmul_forward(h1, self.qkv.weight.value, self.qkv.bias.value if self.qkv.bias else None)
        qkv = qkv.reshape(B, T, h + 2 * hk, D)
        if c.rope:
            ops.rope_forward(qkv, h + hk, c.rope_base, 0)
        with attention_backend(self.attention_backend):
            att, lse = ops.attention_forward(qkv, h, hk, True, 0.0)
        att_flat = att.reshape(B, T, h * D)
        x2 = ops.add(x, self.comm.scatter(ops.matmul_forward(att_flat, self.proj.weight.value,
                                                             self._row_bias(self.proj))))
        h2s, n2 = self.ln2.forward(x2)
        h2 = self.comm.gather(h2s)
        f = ops.matmul_forward(h2, self.fc.weight.value, self.fc.bias.value if self.fc.bias else None)
        g = ops.gelu_forward(f) if c.mlp == "gelu" else ops.swiglu_forward(f)
        y = ops.add(x2, self.comm.scatter(ops.matmul_forward(g, self.down.weight.value, self._row_bias(self.down))))
        if s is not None:
            s.update(n1=n1, n2=n2, h1s=h1s, h2s=h2s, qkv=qkv, att=att, lse=lse, att_flat=att_flat, f=f, g=g)
        return y

    def forward(self, slot: int, x: Any) -> Any:
        check_shard("TransformerBlock.forward", x, self.config.n_embd, self.layout.tp, self.dtype, self.device)
        self._slots.check_free(slot)
        s: dict = {}
        y = self._run(x, s)
        self._slots.store(slot, s)
        return y

    def infer(self, x: Any) -> Any:
        check_shard("TransformerBlock.forward", x, self.config.n_embd, self.layout.tp, self.dtype, self.device)
        return self._run(x, None)

    def backward_input(self, slot: int, dy: Any) -> Any:
        return self._backward(slot, dy, weights_now=False)

    def backward(self, slot: int, dy: Any) -> Any:
        """backward_input and backward_weight in one pass: each reduce-scatter of an input
        gradient runs while the weight-gradient GEMMs that need no more data run."""
        return self._backward(slot, dy, weights_now=True)

    def _backward(self, slot: int, dy: Any, weights_now: bool) -> Any:
        s = self._slots.take(slot, "F", "backward_input")
        self._grads_ready()
        c, L = self.config, self.layout
        B, Ts, C = dy.shape
        T, h, hk, D = Ts * L.tp, L.heads, L.kv_heads, c.head_dim
        flat, views = self.comm.replicated_grads([p.value.numel() for p in self._repl], self.device)
        k1 = len(self.ln1.params())
        # MLP half. The gather of h2 (for dWfc) is queued behind dy's and overlaps the GEMMs.
        w_dy = self.comm.gather(dy, async_op=True)
        w_h2 = self.comm.gather(s["h2s"], async_op=True)
        dy_full = w_dy.wait()
        dg = ops.matmul_backward_input(dy_full, self.down.weight.value)
        df = ops.gelu_backward(dg, s["f"]) if c.mlp == "gelu" else ops.swiglu_backward(dg, s["f"])
        w_dh2 = self.comm.scatter(ops.matmul_backward_input(df, self.fc.weight.value), async_op=True)
        if weights_now:
            weight_grad(self.down, dy_full, s["g"])
            weight_grad(self.fc, df, w_h2.wait())
        dx2 = self.ln2.backward_input(w_dh2.wait(), s["n2"], views[k1:])
        ops.add_(dx2, dy)
        # Attention half; h1 (for dWqkv) gathers while attention backward runs.
        w_dx2 = self.comm.gather(dx2, async_op=True)
        w_h1 = self.comm.gather(s["h1s"], async_op=True)
        dx2_full = w_dx2.wait()
        datt = ops.matmul_backward_input(dx2_full, self.proj.weight.value).reshape(B, T, h, D)
        with attention_backend(self.attention_backend):
            dqkv = ops.attention_backward(datt, s["qkv"], s["att"], s["lse"], h, hk, True, 0.0)
        if c.rope:
            ops.rope_backward(dqkv, h + hk, c.rope_base, 0)
        dqkv = dqkv.reshape(B, T, (h + 2 * hk) * D)
        w_dh1 = self.comm.scatter(ops.matmul_backward_input(dqkv, self.qkv.weight.value), async_op=True)
        if weights_now:
            weight_grad(self.proj, dx2_full, s["att_flat"])
            self._qkv_weight_grad(dqkv, w_h1.wait())
        dx = self.ln1.backward_input(w_dh1.wait(), s["n1"], views[:k1])
        ops.add_(dx, dx2)
        repl = self.comm.group.all_reduce(flat, op="sum", async_op=True)
        if weights_now:
            finish_replicated(repl, views, self._repl)
            self.release(slot)
            return dx
        for k in ("n1", "n2", "qkv", "att", "lse", "f", "h1s", "h2s"):
            del s[k]
        s.update(dqkv=dqkv, w_h1=w_h1, dx2=dx2_full, df=df, w_h2=w_h2, dy=dy_full, repl=(repl, views))
        self._slots.input_done(slot)
        return dx

    def backward_weight(self, slot: int) -> None:
        s = self._slots.take(slot, "I", "backward_weight")
        self._qkv_weight_grad(s["dqkv"], s["w_h1"].wait())
        weight_grad(self.proj, s["dx2"], s["att_flat"])
        weight_grad(self.fc, s["df"], s["w_h2"].wait())
        weight_grad(self.down, s["dy"], s["g"])
        repl, views = s["repl"]
        finish_replicated(repl, views, self._repl)
        self.release(slot)

    def _qkv_weight_grad(self, dqkv: Any, h1: Any) -> None:
        if self.kv_group is None:
            weight_grad(self.qkv, dqkv, h1)
            return
        # Replicated kv heads: each sharer saw only its query heads' share of their
        # gradient; sum the k and v rows (the last 2 D rows) over the sharers.
        w, b = self.qkv.weight, self.qkv.bias
        dw = _C.zeros(list(w.grad.shape), "float32", self.device)
        db = _C.zeros(list(b.grad.shape), "float32", self.device) if b is not None else None
        ops.matmul_backward_weight(dqkv, h1, dw, db, True)
        q = self.layout.heads * self.config.head_dim
        kv = 2 * self.layout.kv_heads * self.config.head_dim
        works = [self.kv_group.all_reduce(dw.narrow0(q, kv), op="sum", async_op=True)]
        if db is not None:
            works.append(self.kv_group.all_reduce(db.narrow0(q, kv), op="sum", async_op=True))
        for wk in works:
            wk.wait()
        ops.add_(w.grad, dw)
        if db is not None:
            ops.add_(b.grad, db)

    def release(self, slot: int) -> None:
        self._slots.map.pop(slot, None)

    def slots(self) -> list[int]:
        return sorted(self._slots.map)


class TPHead(_Grads):
    """Final norm (sequence-parallel) and the vocabulary-parallel output projection with the
    vocabulary-parallel cross-entropy. ``tied``: a TPEmbedding whose wte slice it shares."""

    kind = "LMHead"

    def __init__(self, layout: TPLayout, group: Any, dtype: Any, device: str, tied: TPEmbedding | None = None):
        c = layout.config
        self.layout, self.comm, self.config = layout, TPComm(group, layout), c
        self.dtype, self.device = dtype, device
        self.start, end = layout.vocab_range()
        self.vocab_size = c.vocab_size
        self.norm = Norm("norm", c.norm, c.n_embd, c.norm_eps, dtype, device)
        self.tied = tied is not None
        self.weight = tied.wte if tied is not None else make_param("out.weight", [end - self.start, c.n_embd], dtype,
                                                               device, True)
        self._slots = Slots("LMHead")

    def params(self) -> list[TPParam]:
        return self.norm.params() + ([] if self.tied else [self.weight])

    def _logits(self, x: Any) -> tuple[Any, Any, tuple]:
        """(this slice's logits [N, V_r], h_r, norm state)."""
        check_shard("LMHead", x, self.config.n_embd, self.layout.tp, self.dtype, self.device)
        hs, n = self.norm.forward(x)
        h = self.comm.gather(hs)
        B, T, C = h.shape
        logits = ops.matmul_forward(h, self.weight.value, None)
        return logits.reshape(B * T, logits.shape[-1]), hs, n

    def _losses(self, logits: Any, targets: Any, ignore_index: int) -> tuple[Any, Any, Any]:
        B, T = targets.shape
        tg = targets.reshape(B * T)
        stats = ops.cross_entropy_shard_stats(logits, tg, self.start)
        every = _C.empty([self.layout.tp, B * T, 3], "float32", stats.device)
        self.comm.group.all_gather(every, stats)
        losses, lse = ops.cross_entropy_shard_combine(every, tg, ignore_index)
        return losses, lse, tg

    def forward_loss(self, slot: int, x: Any, targets: Any, grad_scale: float = 1.0, ignore_index: int = -100) -> Any:
        """Per-position losses [B, T] (the same on every tp rank); saves this slice's
        gradient of grad_scale * sum(losses) with respect to its logits."""
        self._slots.check_free(slot)
        logits, hs, n = self._logits(x)
        losses, lse, tg = self._losses(logits, targets, ignore_index)
        ops.cross_entropy_shard_backward(logits, tg, lse, self.start, ignore_index, float(grad_scale))
        self._slots.store(slot, {"dlogits": logits, "hs": hs, "n": n})
        return losses.reshape(*targets.shape)

    def forward(self, slot: int, x: Any) -> Any:
        raise NotImplementedError("LMHead (vocabulary-parallel) trains through forward_loss; full logits are never "
                                  "formed in training")

    def loss(self, x: Any, targets: Any, ignore_index: int = -100) -> Any:
        logits, _, _ = self._logits(x)
        return self._losses(logits, targets, ignore_index)[0].reshape(*targets.shape)

    def logits(self, x: Any) -> Any:
        """Full logits [B, T, V] (for sampling; gathered on the host)."""
        local, _, _ = self._logits(x)
        B, T = x.shape[0], x.shape[1] * self.layout.tp
        host = np.asarray((local if local.device == "cpu" else local.cpu()).to(_C.DType.float32), np.float32)
        width = max(b - a for a, b in (self.layout.vocab_range(r) for r in range(self.layout.tp)))
        pad = np.zeros((B * T, width), np.float32)
        pad[:, :host.shape[1]] = host
        every = np.empty((self.layout.tp, B * T, width), np.float32)
        self.comm.group.all_gather(every, pad)
        full = np.concatenate([every[r, :, :b - a] for r, (a, b) in
                               enumerate(self.layout.vocab_range(r) for r in range(self.layout.tp))], axis=1)
        t = _C.from_numpy(np.ascontiguousarray(full.reshape(B, T, -1)))
        t = t.to(self.dtype) if self.dtype != _C.DType.float32 else t
        return t if self.device == "cpu" else t.to(self.device)

    def infer(self, x: Any) -> Any:
        return self.logits(x)

    def backward_input(self, slot: int, dlogits: Any = None) -> Any:
        return self._backward(slot, dlogits, weights_now=False)

    def backward(self, slot: int, dlogits: Any = None) -> Any:
        """Both halves; the reduce-scatter of dx runs while the output weight's GEMM does."""
        return self._backward(slot, dlogits, weights_now=True)

    def _backward(self, slot: int, dlogits: Any, weights_now: bool) -> Any:
        if dlogits is not None:
            raise ValueError("LMHead.backward_input: the vocabulary-parallel head takes its gradient from forward_loss; "
                             "pass None")
        s = self._slots.take(slot, "F", "backward_input")
        self._grads_ready()
        B, Ts, C = s["hs"].shape
        w_h = self.comm.gather(s["hs"], async_op=True)  # for dW, overlapping dh's GEMM
        dh = ops.matmul_backward_input(s["dlogits"], self.weight.value).reshape(B, Ts * self.layout.tp, C)
        w_dh = self.comm.scatter(dh, async_op=True)
        if weights_now:
            self._weight_grad(s["dlogits"], w_h.wait())
        flat, views = self.comm.replicated_grads([p.value.numel() for p in self.norm.params()], self.device)
        dx = self.norm.backward_input(w_dh.wait(), s["n"], views)
        repl = self.comm.group.all_reduce(flat, op="sum", async_op=True)
        if weights_now:
            finish_replicated(repl, views, self.norm.params())
            self.release(slot)
            return dx
        s.update(w_h=w_h, repl=(repl, views))
        del s["n"], s["hs"]
        self._slots.input_done(slot)
        return dx

    def backward_weight(self, slot: int) -> None:
        s = self._slots.take(slot, "I", "backward_weight")
        self._weight_grad(s["dlogits"], s["w_h"].wait())
        repl, views = s["repl"]
        finish_replicated(repl, views, self.norm.params())
        self.release(slot)

    def _weight_grad(self, dlogits: Any, h: Any) -> None:
        B, T, C = h.shape
        ops.matmul_backward_weight(dlogits, h.reshape(B * T, C), self.weight.grad, None, True)

    def release(self, slot: int) -> None:
        self._slots.map.pop(slot, None)

    def slots(self) -> list[int]:
        return sorted(self._slots.map)
