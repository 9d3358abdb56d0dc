// Double-binary-tree and one-shot all-reduce over peer buffers.
//
// Tree (Sanders, Speck & Träff 2009; comm/tree.cpp builds the trees): even channels use
// tree 0, odd channels tree 1, so each half of the data climbs a tree in which most ranks
// that were leaves of the other are inner nodes. Per sub-chunk s of a channel's slice:
//   up   (step 0): rs[s] = in[s] + child0.rs[s] + child1.rs[s]; signal the parent
//                  (the root instead writes the result to ag and out, and signals its children)
//   down (step 1): ag[s] = out[s] = parent.ag[s]; signal the children
// Sub-chunks pipeline up the tree and then down it; the root's bits reach every rank.
//
// One-shot (latency-bound sizes): every rank copies its input into its ag region, signals
// every peer, then reads all n inputs and reduces them in rank order 0..n-1 into its
// output. One launch, two flag hops; every rank computes the same bits because the order is
// the same everywhere. Reads n-1 inputs per rank, so only for small messages.
#include "comm/cuda/ipc_device.cuh"
#include "core/cuda/check.h"
#include "core/error.h"

namespace ringloom::comm::cuda_ipc {

namespace {

template <typename T, typename W, int kOp>
__global__ void __launch_bounds__(kIpcThreads) ipc_tree_kernel(const IpcKernelArgs a) {
  const int c = blockIdx.x, me = a.me, nsub = a.plan.nsub;
  const IpcTreeNode node = a.tree[c & 1];
  const IpcFlags* mine = flags_of(a, me);
  for (size_t k = 0; k < a.plan.rounds; ++k) {
    const uint64_t g = a.first_round + k;
    if (!ipc_wait_acks(a, g)) return;
    W* my_rs = rs_region<W>(a, me, g);
    T* my_ag = ag_region<T>(a, me, g);
    for (int s = 0; s < nsub; ++s) {
      const IpcPiece pc = ipc_piece(a.plan, k, 0, c, s);
      const W* srcs[2];
      int nsrc = 0;
      for (int i = 0; i < 2; ++i) {
        const int ch = node.child[i];
        if (ch < 0) continue;
        if (!ipc_wait(a, &mine->ready[ch][c], ipc_ready_value(g, 0, s, nsub), ch, 0, g)) return;
        srcs[nsrc++] = rs_region<W>(a, ch, g) + pc.buf;
      }
      const T* in = at<T>(a.in, pc.elem);
      if (node.parent < 0) {
        if (pc.count)
          reduce_piece<T, W, kOp, W>(pc.count, in, srcs, nsrc, nullptr, my_ag + pc.buf, at<T>(a.out, pc.elem),
                                     a.scale);
        ipc_signal(a, node.child[0], node.child[1], ipc_ready_value(g, 1, s, nsub));
      } else {
        if (pc.count) reduce_piece<T, W, kOp, W>(pc.count, in, srcs, nsrc, my_rs + pc.buf, nullptr, nullptr, 1.0f);
        ipc_signal(a, node.parent, -1, ipc_ready_value(g, 0, s, nsub));
      }
    }
    if (node.parent >= 0) {
      const T* parent_ag = ag_region<T>(a, node.parent, g);
      const bool inner = node.child[0] >= 0 || node.child[1] >= 0;
      for (int s = 0; s < nsub; ++s) {
        const IpcPiece pc = ipc_piece(a.plan, k, 0, c, s);
        if (!ipc_wait(a, &mine->ready[node.parent][c], ipc_ready_value(g, 1, s, nsub), node.parent, 1, g)) return;
        if (pc.count)
          copy_piece<T>(pc.count, parent_ag + pc.buf, inner ? my_ag + pc.buf : nullptr, at<T>(a.out, pc.elem));
        ipc_signal(a, node.child[0], node.child[1], ipc_ready_value(g, 1, s, nsub));
      }
    }
    ipc_ack_round(a, g);
  }
}

template <typename T, typename W, int kOp>
__global__ void __launch_bounds__(kIpcThreads) ipc_oneshot_kernel(const IpcKernelArgs a) {
  const int c = blockIdx.x, n = a.n, me = a.me, nsub = a.plan.nsub;
  const IpcFlags* mine = flags_of(a, me);
  for (size_t k = 0; k < a.plan.rounds; ++k) {
    const uint64_t g = a.first_round + k;
    if (!ipc_wait_acks(a, g)) return;
    T* my_ag = ag_region<T>(a, me, g);
    for (int s = 0; s < nsub; ++s) {
      const IpcPiece pc = ipc_piece(a.plan, k, 0, c, s);
      if (pc.count) copy_piece<T>(pc.count, at<T>(a.in, pc.elem), my_ag + pc.buf, nullptr);
      ipc_signal_all(a, ipc_ready_value(g, 0, s, nsub));
    }
    for (int s = 0; s < nsub; ++s) {
      const IpcPiece pc = ipc_piece(a.plan, k, 0, c, s);
      const T* srcs[kIpcMaxRanks];
      for (int q = 0; q < n; ++q) {
        if (q != me && !ipc_wait(a, &mine->ready[q][c], ipc_ready_value(g, 0, s, nsub), q, 0, g)) return;
        srcs[q] = ag_region<T>(a, q, g) + pc.buf;
      }
      if (pc.count)
        reduce_piece<T, W, kOp, T>(pc.count, nullptr, srcs, n, nullptr, nullptr, at<T>(a.out, pc.elem), a.scale);
    }
    ipc_ack_round(a, g);
  }
}

__global__ void __launch_bounds__(kIpcThreads) ipc_drain_kernel(const IpcKernelArgs a) {
  ipc_wait_acks(a, a.first_round);
}

template <typename T, typename W>
void launch_tree_like(bool oneshot, ReduceOp op, const IpcKernelArgs& a, cudaStream_t stream) {
  const dim3 grid(a.plan.channels), block(kIpcThreads);
  const bool max = op == ReduceOp::Max;
  if (oneshot) {
    if (max) ipc_oneshot_kernel<T, W, kIpcMax><<<grid, block, 0, stream>>>(a);
    else ipc_oneshot_kernel<T, W, kIpcSum><<<grid, block, 0, stream>>>(a);
  } else {
    if (max) ipc_tree_kernel<T, W, kIpcMax><<<grid, block, 0, stream>>>(a);
    else ipc_tree_kernel<T, W, kIpcSum><<<grid, block, 0, stream>>>(a);
  }
  CUDA_CHECK_LAUNCH();
}

void dispatch(bool oneshot, DType dtype, ReduceOp op, const IpcKernelArgs& a, cudaStream_t stream) {
  switch (dtype) {
    case DType::Float32: return launch_tree_like<float, float>(oneshot, op, a, stream);
    case DType::BFloat16: return launch_tree_like<uint16_t, float>(oneshot, op, a, stream);
    case DType::Int32: return launch_tree_like<int32_t, int32_t>(oneshot, op, a, stream);
    case DType::Int64: return launch_tree_like<int64_t, int64_t>(oneshot, op, a, stream);
    case DType::UInt8: return launch_tree_like<uint8_t, uint8_t>(oneshot, op, a, stream);
    default:
      fail(ErrorKind::Type, "ringloom.distributed: the IPC ", oneshot ? "one-shot" : "tree", " cannot reduce ",
           dtype_name(dtype));
  }
}

}  // namespace

void launch_ipc_tree(DType dtype, ReduceOp op, const IpcKernelArgs& a, cudaStream_t stream) {
  dispatch(false, dtype, op, a, stream);
}

void launch_ipc_drain(const IpcKernelArgs& a, cudaStream_t stream) {
  ipc_drain_kernel<<<1, kIpcThreads, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

void launch_ipc_oneshot(DType dtype, ReduceOp op, const IpcKernelArgs& a, cudaStream_t stream) {
  dispatch(true, dtype, op, a, stream);
}

}  // namespace ringloom::comm::cuda_ipc
