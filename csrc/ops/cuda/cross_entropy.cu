// Fused softmax cross-entropy; the math is in ops/cross_entropy.h:
//   lse_n = m + log(sum_j exp(x_nj - m))          (online softmax, ops/cuda/cross_entropy_common.cuh)
//   loss_n = lse_n - x_n[t_n]
//   dlogits_nj = grad_scale * (exp(x_nj - lse_n) - [j == t_n]),  written over x in place
// The floor of memory traffic is reading every logit once and writing every gradient once
// (4 bytes per logit in bf16; the forward alone reads 2). Everything below is about
// reaching that floor at the bandwidth of the device.
//
// Bytes in flight. At the copy rate of an H200 (~4.2 TB/s over 132 SMs, ~32 GB/s per SM)
// and ~0.7-1 us of loaded DRAM latency, Little's law asks for ~25-32 KB of requests in
// flight per SM at all times. A row of 50304 bf16 logits is 100.6 KB, so one row per SM
// in flight is enough, if the loads of the next row are issued while the current one is
// being reduced and written.
//
// Where the row lives between its statistics and its gradient (the gradient needs lse,
// which needs the whole row):
//  (a) registers: 1024 threads x 7 16-byte packs = 28 registers a thread, one block per SM
//      (64 registers a thread at 1024 threads). The SM's register file holds one row, so
//      the next row's loads cannot start until this row's gradient is written: the memory
//      pipe idles through every row's load latency and block reduction.
//  (b) shared memory (chosen): the row's 16-byte packs are copied with cp.async into a
//      buffer of V / 8 packs in bf16, V / 4 in fp32 (100.6 KB for 50304 bf16: two
//      512-thread blocks per SM in 228 KB; fp32 rows of that size, one). Thread t
//      owns packs t, t + blockDim, ... of every row: it alone fills, reads and refills them,
//      so refilling needs no barrier. The gradient pass reads a pack, writes its gradient
//      to memory, and at once issues the copy of the next row's pack into the same slot:
//      the next row's 100 KB are in flight while this block finishes its row, waits for
//      them, and reduces, and the other block on the SM computes meanwhile. The forward
//      alone refills each pack as soon as the statistics pass has read it.
//  (c) a cluster of 2-4 SMs splitting a row, combining (m, s) through distributed shared
//      memory: a smaller buffer per SM but a cluster barrier per row, and nothing to gain
//      over (b), whose in-flight bytes per SM already exceed the Little's-law need.
// Compute per row per SM (a check that (b) stays memory-bound): 2.1 exponentials per logit
// (statistics with one rescale per pack, then the gradient) on 16 MUFU lanes per SM are
// ~6.7k cycles = 3.4 us at 1.98 GHz, against 6.4 us for the row's 201 KB at the copy rate:
// half the SM's time, hidden by the second block.
//
// Rows whose packs need more than kMaxRowBytes of shared memory (bf16 V > 114695, fp32
// V > 57347) use the two-pass kernel: pass 1 streams the row for its statistics, pass 2
// reads it again, from L2 while it is still there (two 1024-thread blocks per SM keep
// ~264 rows in flight), and writes the gradient.
//
// Each row's statistics are merged in an order fixed by the block size, which depends on V
// alone: results are bitwise reproducible.
//
// Rows start at any element: the first elements up to 16-byte alignment (the head) and
// the last ones after the packs (the tail), fewer than 8 each, are read and written one by
// one from memory, by the first threads of the block, which keep them in registers.
//
// A target outside [0, V) that is not ignore_index cannot be reported without a host
// synchronisation; its row's loss is NaN instead (so the mean loss shows it), and its
// gradient is the softmax without the one-hot term.
#include <cmath>

#include "ops/cross_entropy.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cross_entropy_common.cuh"

namespace ringloom::cuda {

namespace {

constexpr int kThreads = 1024;          // two-pass kernel
constexpr int kStagedThreads = 512;     // shared-memory kernel, at most
constexpr int64_t kMaxRowBytes = 224 * 1024;  // packs of one row in shared memory, at most

// The row splits into a scalar head (until 16-byte alignment), packs, and a scalar tail.
struct RowSplit {
  int64_t head, packs, tail_start;
};
template <typename T>
__device__ RowSplit split_row(const T* row, int64_t V) {
  constexpr int N = Pack<T>::kN;
  const int64_t mis = (reinterpret_cast<uintptr_t>(row) & 15) / sizeof(T);
  const int64_t head = mis == 0 ? 0 : (N - mis < V ? N - mis : V);
  const int64_t packs = (V - head) / N;
  return {head, packs, head + packs * N};
}

// ---- (b): the row staged in shared memory, the next row's copies issued behind it ----
template <typename T, bool kBackward>
__global__ void __launch_bounds__(kStagedThreads, 2)
    cross_entropy_staged_kernel(T* __restrict__ logits, const int* __restrict__ targets, float* __restrict__ losses,
                                int64_t rows, int64_t V, int64_t ignore_index, float grad_scale) {
  constexpr int N = Pack<T>::kN;
  extern __shared__ int4 slots[];  // packs of the row in hand, V / N at most
  __shared__ float scratch[2][64];
  const int tid = threadIdx.x, nt = blockDim.x;
  auto slot = [&](int k, float (&x)[N]) {
    Pack<T> pk;
    *reinterpret_cast<int4*>(&pk) = slots[k];
#pragma unroll
    for (int j = 0; j < N; ++j) x[j] = to_f32(pk.v[j]);
  };

  int64_t r = blockIdx.x;  // the grid is at most `rows` blocks
  int target = targets[r];  // each row's target is loaded one row ahead
  {
    const T* row = logits + r * V;
    const RowSplit sp = split_row(row, V);
    for (int k = tid; k < sp.packs; k += nt) async_copy16(&slots[k], row + sp.head + int64_t(k) * N);
  }
  for (int parity = 0; r < rows; r += gridDim.x, parity ^= 1) {
    T* row = logits + r * V;
    const RowSplit sp = split_row(row, V);
    const bool ignored = int64_t(target) == ignore_index;
    const bool valid = target >= 0 && target < V;
    // The next row's packs go into the slots as this row's are consumed.
    const int64_t rn = r + gridDim.x;
    const int target_next = rn < rows ? targets[rn] : 0;
    const T* next = logits + (rn < rows ? rn : r) * V;
    const RowSplit spn = rn < rows ? split_row(next, V) : RowSplit{0, 0, 0};
    const int kmax = int(sp.packs > spn.packs ? sp.packs : spn.packs);
    // Read before the barrier of the reduction, hence before any gradient is written.
    const float x_target = tid == 0 && valid && !ignored ? to_f32(row[target]) : 0.0f;
    // Head and tail (fewer than N each; blockDim >= 64): element tid of each, loaded
    // before the wait so that their latency overlaps it.
    const bool has_head = tid < sp.head, has_tail = sp.tail_start + tid < V;
    const float x_head = has_head ? to_f32(row[tid]) : 0.0f;
    const float x_tail = has_tail ? to_f32(row[sp.tail_start + tid]) : 0.0f;
    async_copy_wait_all();

    // Ignored rows' statistics are computed too (and unused): no branch before the reduction.
    SoftmaxState st;
    if (has_head) st.add(x_head);
    if (has_tail) st.add(x_tail);
    for (int k = tid; k < (kBackward ? sp.packs : kmax); k += nt) {
      if (k < sp.packs) {
        float x[N];
        slot(k, x);
        st.add_pack(x);
      }
      if (!kBackward && k < spn.packs) async_copy16(&slots[k], next + spn.head + int64_t(k) * N);
    }
    const SoftmaxState w = block_softmax_state(st, scratch[parity]);
    const float lse = w.m + logf(w.s);
    if (tid == 0) losses[r] = ignored ? 0.0f : valid ? lse - x_target : NAN;

    if constexpr (kBackward) {
      if (has_head) row[tid] = from_f32<T>(ignored ? 0.0f : xent_grad(x_head, tid, target, lse, grad_scale));
      if (has_tail) {
        const int64_t i = sp.tail_start + tid;
        row[i] = from_f32<T>(ignored ? 0.0f : xent_grad(x_tail, i, target, lse, grad_scale));
      }
      for (int k = tid; k < kmax; k += nt) {
        if (k < sp.packs) {
          const int64_t i0 = sp.head + int64_t(k) * N;
          Pack<T> g;
          if (ignored) {
#pragma unroll
            for (int j = 0; j < N; ++j) g.v[j] = from_f32<T>(0.0f);
          } else {
            float x[N];
            slot(k, x);
#pragma unroll
            for (int j = 0; j < N; ++j) g.v[j] = from_f32<T>(xent_grad(x[j], i0 + j, target, lse, grad_scale));
          }
          // Last use of these bytes: a streaming (evict-first) store.
          __stcs(reinterpret_cast<int4*>(row + i0), *reinterpret_cast<const int4*>(&g));
        }
        if (k < spn.packs) async_copy16(&slots[k], next + spn.head + int64_t(k) * N);
      }
    }
    target = target_next;
  }
}

// ---- Rows larger than kMaxRowBytes: two passes, the second from L2 ----
template <typename T, bool kBackward>
__global__ void __launch_bounds__(kThreads) cross_entropy_two_pass_kernel(T* __restrict__ logits,
                                                                          const int* __restrict__ targets,
                                                                          float* __restrict__ losses, int64_t rows,
                                                                          int64_t V, int64_t ignore_index,
                                                                          float grad_scale) {
  constexpr int N = Pack<T>::kN;
  __shared__ float scratch[2][64];
  int parity = 0;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T* row = logits + r * V;
    const int target = targets[r];
    const bool ignored = int64_t(target) == ignore_index;
    const RowSplit sp = split_row(row, V);

    if (ignored) {  // loss 0, gradient 0
      if (kBackward) {
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x) row[i] = from_f32<T>(0.0f);
      }
      if (threadIdx.x == 0) losses[r] = 0.0f;
      continue;
    }
    const bool valid = target >= 0 && target < V;
    // Read before the barrier of the reduction, hence before any gradient is written.
    const float x_target = threadIdx.x == 0 && valid ? to_f32(row[target]) : 0.0f;

    // Pass 1: online softmax statistics.
    SoftmaxState st;
    for (int64_t i = threadIdx.x; i < sp.head; i += blockDim.x) st.add(to_f32(row[i]));
    int64_t p = threadIdx.x;
    for (; p + blockDim.x < sp.packs; p += 2 * blockDim.x) {  // two loads in flight
      float a[N], b[N];
      load_vec<T, N>(row + sp.head + p * N, a);
      load_vec<T, N>(row + sp.head + (p + blockDim.x) * N, b);
      st.add_pack(a);
      st.add_pack(b);
    }
    if (p < sp.packs) {
      float a[N];
      load_vec<T, N>(row + sp.head + p * N, a);
      st.add_pack(a);
    }
    for (int64_t i = sp.tail_start + threadIdx.x; i < V; i += blockDim.x) st.add(to_f32(row[i]));

    const SoftmaxState w = block_softmax_state(st, scratch[parity]);
    parity ^= 1;
    const float lse = w.m + logf(w.s);
    if (threadIdx.x == 0) losses[r] = valid ? lse - x_target : NAN;

    if constexpr (kBackward) {
      // Pass 2: the gradient, written over x.
      for (int64_t i = threadIdx.x; i < sp.head; i += blockDim.x)
        row[i] = from_f32<T>(xent_grad(to_f32(row[i]), i, target, lse, grad_scale));
      // Packs in reverse order: the end of the row was read last in pass 1, so it is the
      // part most likely still in L2. Last use of the data: evict-first loads and stores.
      for (int64_t q = sp.packs - 1 - threadIdx.x; q >= 0; q -= blockDim.x) {
        T* ptr = row + sp.head + q * N;
        Pack<T> pk = load_pack_stream(ptr);
        const int64_t i0 = sp.head + q * N;
#pragma unroll
        for (int k = 0; k < N; ++k) pk.v[k] = from_f32<T>(xent_grad(to_f32(pk.v[k]), i0 + k, target, lse, grad_scale));
        __stcs(reinterpret_cast<int4*>(ptr), *reinterpret_cast<const int4*>(&pk));
      }
      for (int64_t i = sp.tail_start + threadIdx.x; i < V; i += blockDim.x)
        row[i] = from_f32<T>(xent_grad(to_f32(row[i]), i, target, lse, grad_scale));
    }
  }
}

// Launches the staged kernel where a row's packs fit in shared memory; false otherwise.
template <typename T, bool kBackward>
bool launch_staged(T* logits, const int* targets, float* losses, int64_t rows, int64_t V, int64_t ignore_index,
                   float grad_scale, const OpContext& ctx) {
  const auto kernel = cross_entropy_staged_kernel<T, kBackward>;
  const int64_t slots = V / Pack<T>::kN;
  const int64_t bytes = slots * 16;
  if (bytes > kMaxRowBytes) return false;
  int optin = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, ctx.device));
  cudaFuncAttributes attr{};
  CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  const int64_t cap = int64_t(optin) - int64_t(attr.sharedSizeBytes);
  if (bytes > cap) return false;
  // The same values on every call: concurrent launches never see a smaller cap. All of
  // the unified L1/shared memory as shared memory: two rows of 100 KB per SM (the copies
  // bypass L1).
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(std::min(cap, kMaxRowBytes))));
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
  // About four packs a thread, in whole warps.
  const int threads = int(std::clamp<int64_t>(ceil_div(ceil_div(slots, 4), 32) * 32, 64, kStagedThreads));
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, size_t(bytes)));
  if (per_sm == 0) return false;
  // The fewest blocks that take the same number of rows as the most loaded one (some one
  // fewer): no last round in which a few blocks work alone. 8192 rows with room for 264
  // resident blocks: 256 blocks of 32 rows each.
  const int64_t rows_per_block = ceil_div(rows, int64_t(per_sm) * sm_count(ctx.device));
  const int grid = int(ceil_div(rows, rows_per_block));
  kernel<<<grid, threads, size_t(bytes), ctx.stream>>>(logits, targets, losses, rows, V, ignore_index, grad_scale);
  return true;
}

template <bool kBackward>
Tensor run(Tensor& logits, const Tensor& targets, int64_t ignore_index, float grad_scale) {
  const int64_t rows = logits.size(0), V = logits.size(1);
  Tensor losses = Tensor::empty({rows}, DType::Float32, logits.device());
  if (rows == 0) return losses;
  OpContext ctx(logits);
  if (V == 0) {
    CUDA_CHECK(cudaMemsetAsync(losses.data(), 0, losses.nbytes(), ctx.stream));
    return losses;
  }
  RL_DISPATCH_FLOAT(logits.dtype(), T, {
    T* x = logits.data_as<T>();
    const int* t = targets.data_as<int>();
    float* l = losses.data_as<float>();
    if (!launch_staged<T, kBackward>(x, t, l, rows, V, ignore_index, grad_scale, ctx)) {
      const int grid = int(std::min<int64_t>(rows, int64_t(sm_count(ctx.device)) * 64));
      cross_entropy_two_pass_kernel<T, kBackward><<<grid, kThreads, 0, ctx.stream>>>(x, t, l, rows, V, ignore_index,
                                                                                    grad_scale);
    }
  });
  CUDA_CHECK_LAUNCH();
  return losses;
}

}  // namespace

Tensor cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  Tensor l = logits;  // forward only: the kernels do not write the logits
  return run<false>(l, targets, ignore_index, 0.0f);
}

Tensor cross_entropy_forward_backward(Tensor& logits, const Tensor& targets, int64_t ignore_index, float grad_scale) {
  return run<true>(logits, targets, ignore_index, grad_scale);
}

}  // namespace ringloom::cuda
