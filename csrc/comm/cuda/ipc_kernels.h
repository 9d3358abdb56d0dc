// Launchers of the CUDA IPC collectives' kernels (ring, gather and broadcast in ipc_ring.cu; tree,
// one-shot and drain in ipc_tree.cu); the host side that sets the buffers up and calls them is ipc_group.cpp.
//
// Every kernel runs one channel per CUDA block; blocks of the same channel on different
// ranks talk through the flags of ipc_plan.h (pull model: a rank reads its peer's buffer
// over NVLink/PCIe peer access, reduces into its own, then tells the consumer). Every wait
// is bounded: thread 0 of the block spins on an acquire load, and gives up when the host
// sets the abort word, another block gave up, or `timeout_ns` passed on the GPU's global
// timer (a bound in time rather than in spins, so it does not depend on clocks); it then
// records {code, peer, step, channel, round} in `status` and the kernel returns, so the host raises an error naming the op and the peer instead of hanging.
#pragma once
#ifdef RINGLOOM_WITH_CUDA
#include <cuda_runtime.h>

#include <cstdint>

#include "comm/ipc_plan.h"
#include "comm/reduce.h"
#include "core/dtype.h"

namespace ringloom::comm::cuda_ipc {

enum IpcErrorCode : int { kIpcOk = 0, kIpcReadyTimeout = 1, kIpcAckTimeout = 2, kIpcAborted = 3 };

// The first error the kernels met: the block that wins `fail_word` (device memory) fills
// this record in host-mapped memory, `code` last, so the host reads it without a CUDA call.
struct IpcStatus {
  int code;
  int peer;
  int step;
  int channel;
  unsigned long long round;
};

struct IpcTreeNode {
  int parent;     // -1 at the root
  int child[2];   // -1 where absent
};

struct IpcKernelArgs {
  IpcPlan plan;
  int n = 0, me = 0;
  uint64_t first_round = 0;           // from IpcRounds::take
  char* bufs[kIpcMaxRanks] = {};      // every rank's buffer in this process (bufs[me] is ours)
  size_t slot_bytes = 0;              // a slot = rs region + ag region
  size_t region_bytes = 0;
  const void* in = nullptr;           // input elements, indexed by data index - in_sub
  void* out = nullptr;                // output elements, indexed by data index - out_sub
  size_t in_sub = 0, out_sub = 0;
  float scale = 1.0f;                 // avg: 1/n, applied once to the fp32 result
  int first_step = 0, last_step = 0;  // ring: the steps this op runs (see ipc_ring.cu)
  int root = 0;                       // broadcast
  IpcTreeNode tree[2] = {};           // this rank's node in the double tree's two trees
  int* fail_word = nullptr;             // device: nonzero once any block gave up
  IpcStatus* status = nullptr;          // host-mapped
  const volatile int* abort = nullptr;  // host-mapped
  uint64_t timeout_ns = 0;
};

// How the values combine: sum (avg sums, the final step scales), max, or no reduction
// (data movement: all-gather, broadcast).
enum IpcCombine : int { kIpcSum = 0, kIpcMax = 1, kIpcCopy = 2 };

// Ring all-reduce / reduce-scatter (steps 0..2n-2 / 0..n-1) on a reducible dtype.
void launch_ipc_ring(DType dtype, ReduceOp op, const IpcKernelArgs& a, cudaStream_t stream);
// Ring all-gather (steps n-1..2n-2) of elements of `esize` bytes.
void launch_ipc_ring_gather(size_t esize, const IpcKernelArgs& a, cudaStream_t stream);
// Chain broadcast from a.root of `esize`-byte elements.
void launch_ipc_broadcast(size_t esize, const IpcKernelArgs& a, cudaStream_t stream);
// Double binary tree all-reduce.
void launch_ipc_tree(DType dtype, ReduceOp op, const IpcKernelArgs& a, cudaStream_t stream);
// One-shot all-reduce: every rank reads every peer's input.
void launch_ipc_oneshot(DType dtype, ReduceOp op, const IpcKernelArgs& a, cudaStream_t stream);

// One block that waits until every peer acked round a.first_round - 2 (before a buffer is
// freed: peers may still read it after our own kernels ended).
void launch_ipc_drain(const IpcKernelArgs& a, cudaStream_t stream);

constexpr int kIpcThreads = 512;

}  // namespace ringloom::comm::cuda_ipc
#endif  // RINGLOOM_WITH_CUDA
