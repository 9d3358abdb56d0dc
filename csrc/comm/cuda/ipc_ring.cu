// Ring all-reduce, reduce-scatter and all-gather over peer buffers, and the chain broadcast
// (Patarasuk & Yuan 2009; the schedule of comm/ring.cpp, pulled instead of pushed).
//
// Steps of one round, for rank r of n with left = r-1 and right = r+1 (mod n):
//   j = 0        load:    rs[r-1]  = in[r-1]                                 (one segment)
//   j = 1..n-2   reduce:  rs[p]    = in[p] + left.rs[p],    p = r-j-1        (left made it at j-1)
//   j = n-1      final:   out[r]   = ag[r] = in[r] + left.rs[r]              (all n ranks summed)
//   j = n..2n-2  gather:  out[q]   = ag[q] = left.ag[q],    q = r-1-(j-n)    (left had it at j-1)
// Every step but the first of an op waits for the left's flag of step j-1 on the same
// sub-chunk, and signals the right after its own. Reduce-scatter runs steps 0..n-1 (the
// final step writes only `out`, this rank's segment), all-gather n-1..2n-2 (step n-1 loads
// this rank's input into ag[r]). Partial sums live in the rs region in the wire type (fp32
// for bf16: reduced in fp32, rounded once); final values in the ag region in the tensor's
// type, so every rank copies the same bits.
#include "comm/cuda/ipc_device.cuh"
#include "core/cuda/check.h"
#include "core/error.h"

namespace ringloom::comm::cuda_ipc {

namespace {

template <typename T, typename W, int kOp>
__global__ void __launch_bounds__(kIpcThreads) ipc_ring_kernel(const IpcKernelArgs a) {
  const int c = blockIdx.x, n = a.n, me = a.me, nsub = a.plan.nsub;
  const int left = ipc_mod(me - 1, n), right = ipc_mod(me + 1, n);
  const IpcFlags* mine = flags_of(a, me);
  const bool gather = a.last_step >= n;  // all-reduce and all-gather fill the ag regions
  for (size_t k = 0; k < a.plan.rounds; ++k) {
    const uint64_t g = a.first_round + k;
    if (!ipc_wait_acks(a, g)) return;
    W* my_rs = rs_region<W>(a, me, g);
    const W* left_rs = rs_region<W>(a, left, g);
    T* my_ag = ag_region<T>(a, me, g);
    const T* left_ag = ag_region<T>(a, left, g);
    for (int j = a.first_step; j <= a.last_step; ++j) {
      const bool rs_step = j < n;
      const int seg = rs_step ? ipc_mod(me - j - 1, n) : ipc_mod(me - 1 - (j - n), n);
      for (int s = 0; s < nsub; ++s) {
        const IpcPiece pc = ipc_piece(a.plan, k, seg, c, s);
        if (j > a.first_step && !ipc_wait(a, &mine->ready[left][c], ipc_ready_value(g, j - 1, s, nsub), left, j, g))
          return;
        if (pc.count) {
          if constexpr (kOp == kIpcCopy) {
            // all-gather: load our input at step n-1, then pass the left's segments on
            T* o = at<T>(a.out, pc.elem - a.out_sub);
            T* ag = j < a.last_step ? my_ag + pc.buf : nullptr;  // nobody reads the last one from us
            if (j == n - 1) copy_piece<T>(pc.count, at<T>(a.in, pc.elem - a.in_sub), my_ag + pc.buf, o);
            else copy_piece<T>(pc.count, left_ag + pc.buf, ag, o);
          } else if (!rs_step) {
            copy_piece<T>(pc.count, left_ag + pc.buf, j < a.last_step ? my_ag + pc.buf : nullptr,
                          at<T>(a.out, pc.elem - a.out_sub));
          } else {
            const T* in = at<T>(a.in, pc.elem - a.in_sub);
            const W* src = left_rs + pc.buf;
            if (j == 0) {
              reduce_piece<T, W, kOp, W>(pc.count, in, nullptr, 0, my_rs + pc.buf, nullptr, nullptr, 1.0f);
            } else if (j < n - 1) {
              reduce_piece<T, W, kOp, W>(pc.count, in, &src, 1, my_rs + pc.buf, nullptr, nullptr, 1.0f);
            } else {
              reduce_piece<T, W, kOp, W>(pc.count, in, &src, 1, nullptr, gather ? my_ag + pc.buf : nullptr,
                                         at<T>(a.out, pc.elem - a.out_sub), a.scale);
            }
          }
        }
        if (j < a.last_step) ipc_signal(a, right, -1, ipc_ready_value(g, j, s, nsub));
      }
    }
    ipc_ack_round(a, g);
  }
}

// Chain broadcast: position i = r - root; position 0 loads its tensor into ag, position i
// copies position i-1's ag into its own (unless it is the last) and into its tensor.
template <typename T>
__global__ void __launch_bounds__(kIpcThreads) ipc_broadcast_kernel(const IpcKernelArgs a) {
  const int c = blockIdx.x, n = a.n, me = a.me, nsub = a.plan.nsub;
  const int pos = ipc_mod(me - a.root, n);
  const int left = ipc_mod(me - 1, n), right = pos < n - 1 ? ipc_mod(me + 1, n) : -1;
  const IpcFlags* mine = flags_of(a, me);
  for (size_t k = 0; k < a.plan.rounds; ++k) {
    const uint64_t g = a.first_round + k;
    if (!ipc_wait_acks(a, g)) return;
    T* my_ag = ag_region<T>(a, me, g);
    const T* left_ag = ag_region<T>(a, left, g);
    for (int s = 0; s < nsub; ++s) {
      const IpcPiece pc = ipc_piece(a.plan, k, 0, c, s);
      if (pos > 0 && !ipc_wait(a, &mine->ready[left][c], ipc_ready_value(g, 0, s, nsub), left, 0, g)) return;
      if (pc.count) {
        if (pos == 0) copy_piece<T>(pc.count, at<T>(a.in, pc.elem), my_ag + pc.buf, nullptr);
        else copy_piece<T>(pc.count, left_ag + pc.buf, right >= 0 ? my_ag + pc.buf : nullptr, at<T>(a.out, pc.elem));
      }
      ipc_signal(a, right, -1, ipc_ready_value(g, 0, s, nsub));
    }
    ipc_ack_round(a, g);
  }
}

template <typename T, typename W, int kOp>
void launch_ring(const IpcKernelArgs& a, cudaStream_t stream) {
  ipc_ring_kernel<T, W, kOp><<<a.plan.channels, kIpcThreads, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

template <typename T, typename W>
void launch_ring_op(ReduceOp op, const IpcKernelArgs& a, cudaStream_t stream) {
  if (op == ReduceOp::Max) launch_ring<T, W, kIpcMax>(a, stream);
  else launch_ring<T, W, kIpcSum>(a, stream);
}

}  // namespace

void launch_ipc_ring(DType dtype, ReduceOp op, const IpcKernelArgs& a, cudaStream_t stream) {
  switch (dtype) {
    case DType::Float32: return launch_ring_op<float, float>(op, a, stream);
    case DType::BFloat16: return launch_ring_op<uint16_t, float>(op, a, stream);
    case DType::Int32: return launch_ring_op<int32_t, int32_t>(op, a, stream);
    case DType::Int64: return launch_ring_op<int64_t, int64_t>(op, a, stream);
    case DType::UInt8: return launch_ring_op<uint8_t, uint8_t>(op, a, stream);
    default: fail(ErrorKind::Type, "ringloom.distributed: the IPC ring cannot reduce ", dtype_name(dtype));
  }
}

void launch_ipc_ring_gather(size_t esize, const IpcKernelArgs& a, cudaStream_t stream) {
  switch (esize) {
    case 1: return launch_ring<uint8_t, uint8_t, kIpcCopy>(a, stream);
    case 2: return launch_ring<uint16_t, uint16_t, kIpcCopy>(a, stream);
    case 4: return launch_ring<uint32_t, uint32_t, kIpcCopy>(a, stream);
    case 8: return launch_ring<uint64_t, uint64_t, kIpcCopy>(a, stream);
    default: fail(ErrorKind::Type, "ringloom.distributed: the IPC all-gather has no ", esize, "-byte elements");
  }
}

void launch_ipc_broadcast(size_t esize, const IpcKernelArgs& a, cudaStream_t stream) {
  const dim3 grid(a.plan.channels), block(kIpcThreads);
  switch (esize) {
    case 1: ipc_broadcast_kernel<uint8_t><<<grid, block, 0, stream>>>(a); break;
    case 2: ipc_broadcast_kernel<uint16_t><<<grid, block, 0, stream>>>(a); break;
    case 4: ipc_broadcast_kernel<uint32_t><<<grid, block, 0, stream>>>(a); break;
    case 8: ipc_broadcast_kernel<uint64_t><<<grid, block, 0, stream>>>(a); break;
    default: fail(ErrorKind::Type, "ringloom.distributed: the IPC broadcast has no ", esize, "-byte elements");
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace ringloom::comm::cuda_ipc
