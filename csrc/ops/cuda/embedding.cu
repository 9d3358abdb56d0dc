// Token + position embedding, forward and a deterministic backward; the math is in
// ops/embedding.h.
//
// Forward: out[b, t] = wte[id] + wpe[t], one 16-byte pack per thread where C allows.
//
// Backward without float atomics: dwte[id] needs the sum of dout over every position
// holding that id, and atomics would add them in whatever order the hardware picks, so the
// bits would change from run to run. Instead the (id, position) pairs are sorted by id with
// CUB's radix sort, which is stable: positions of one id stay in increasing order. Each
// run of equal ids then starts one block that adds its rows in that order and writes the
// row of dwte once. dwpe[t] sums dout[b, t] over b in order of b, one thread per column.
//
// Ids outside [0, V): the CPU entry checks them on the host, but on the GPU a check would
// need the ids on the host (a synchronisation per step). The kernels clamp them into range
// instead, so a bad id reads (and its gradient lands in) row 0 or V-1 rather than faulting;
// validate ids where they are produced (the data loader) to catch such bugs.
//
// Vocabulary slices (the shard ops): wte holds rows [start, start + V); an id outside gives
// a zero token row in forward, and in backward its key is V, one past the slice, so the
// sort puts those positions last and their run adds nothing.
#include <cub/device/device_radix_sort.cuh>

#include "ops/cuda/common.cuh"
#include "ops/embedding.h"

namespace ringloom::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int clamp_id(int id, int V) { return min(max(id, 0), V - 1); }

// The row of wte for a full-vocabulary id: clamped into [0, V) for the full table, -1
// (outside) or V (sort key) for a slice.
__device__ __forceinline__ int slice_row(int id, int start, int V, bool shard, int outside) {
  if (!shard) return clamp_id(id, V);
  const int v = id - start;
  return v >= 0 && v < V ? v : outside;
}

// Work item: (token n, pack p of N columns). kVec: C is a multiple of the pack width and
// all pointers are aligned.
template <typename T, bool kVec>
__global__ void embedding_forward_kernel(const int* ids, const T* wte, const T* wpe, T* out, int64_t tokens, int T_len,
                                         int C, int V, int start, bool shard) {
  constexpr int N = kVec ? Pack<T>::kN : 1;
  const int packs = C / N;
  for (int64_t it = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; it < tokens * packs;
       it += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = it / packs;
    const int c = int(it - n * packs) * N;
    const int id = slice_row(ids[n], start, V, shard, -1);
    float e[N], p[N];
    if (id >= 0) {
      load_vec<T, N>(wte + int64_t(id) * C + c, e);
    } else {
#pragma unroll
      for (int k = 0; k < N; ++k) e[k] = 0.0f;
    }
    if (wpe) {
      load_vec<T, N>(wpe + int64_t(n % T_len) * C + c, p);
#pragma unroll
      for (int k = 0; k < N; ++k) e[k] += p[k];
    }
    store_vec<T, N>(out + n * C + c, e);
  }
}

__global__ void sort_keys_kernel(const int* ids, int* keys, int* positions, int64_t n, int V, int start, bool shard) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    keys[i] = slice_row(ids[i], start, V, shard, V);
    positions[i] = int(i);
  }
}

// One block per sorted entry; only the first entry of each run of equal ids works: it adds
// dout of the run's positions (in increasing order) into dwte[id].
template <typename T, typename G>
__global__ void embedding_dwte_kernel(const int* keys, const int* positions, const T* dout, G* dwte, int64_t n, int C,
                                      int V) {
  const int64_t i = blockIdx.x;
  const int id = keys[i];
  if (id >= V || (i > 0 && keys[i - 1] == id)) return;  // key V: outside the slice
  int64_t end = i + 1;
  while (end < n && keys[end] == id) ++end;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = i; j < end; ++j) acc += to_f32(dout[int64_t(positions[j]) * C + c]);
    G* d = dwte + int64_t(id) * C + c;
    *d = from_f32<G>(to_f32(*d) + acc);
  }
}

// dwpe[t, c] += sum_b dout[b, t, c], b in order.
template <typename T, typename G>
__global__ void embedding_dwpe_kernel(const T* dout, G* dwpe, int B, int64_t T_len, int C) {
  const int64_t items = T_len * C;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < items; e += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int b = 0; b < B; ++b) acc += to_f32(dout[b * items + e]);
    dwpe[e] = from_f32<G>(to_f32(dwpe[e]) + acc);
  }
}

int bits_for(int64_t V) {
  int bits = 1;
  while ((int64_t(1) << bits) < V) ++bits;
  return bits;
}

Tensor forward_rows(const Tensor& ids, const Tensor& wte, const Tensor& wpe, int64_t start, bool shard) {
  const int64_t B = ids.size(0), Tn = ids.size(1), V = wte.size(0), C = wte.size(1);
  Tensor out = Tensor::empty({B, Tn, C}, wte.dtype(), wte.device());
  const int64_t tokens = B * Tn;
  if (out.numel() == 0) return out;
  RL_CHECK(V > 0, Value, "embedding_forward: empty vocabulary ", wte.describe());
  OpContext ctx(wte);
  RL_DISPATCH_FLOAT(wte.dtype(), T, {
    const T* pe = wte.data_as<T>();
    const T* pp = wpe.defined() ? wpe.data_as<T>() : nullptr;
    T* po = out.data_as<T>();
    const bool vec = C % Pack<T>::kN == 0 && aligned16(pe) && aligned16(po) && (!pp || aligned16(pp));
    if (vec)
      embedding_forward_kernel<T, true>
          <<<grid_for(tokens * C / Pack<T>::kN, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(
              ids.data_as<int>(), pe, pp, po, tokens, int(Tn), int(C), int(V), int(start), shard);
    else
      embedding_forward_kernel<T, false><<<grid_for(tokens * C, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(
          ids.data_as<int>(), pe, pp, po, tokens, int(Tn), int(C), int(V), int(start), shard);
  });
  CUDA_CHECK_LAUNCH();
  return out;
}

void backward_rows(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe, int64_t start, bool shard) {
  const int64_t B = ids.size(0), Tn = ids.size(1), V = dwte.size(0), C = dwte.size(1);
  const int64_t n = B * Tn;
  if (n == 0 || C == 0) return;
  RL_CHECK(n < (int64_t(1) << 31), Value, "embedding_backward: ", n, " tokens exceed the CUDA kernel's int32 index");
  RL_CHECK(!dwpe.defined() || dwpe.dtype() == dwte.dtype(), Type, "embedding_backward: dwpe (", dwpe.describe(),
           ") and dwte (", dwte.describe(), ") must have the same dtype");
  OpContext ctx(dwte);
  // Sort (id, position) pairs by id.
  Tensor keys = Tensor::empty({2, n}, DType::Int32, dwte.device());
  Tensor pos = Tensor::empty({2, n}, DType::Int32, dwte.device());
  int* keys_in = keys.data_as<int>();
  int* keys_out = keys_in + n;
  int* pos_in = pos.data_as<int>();
  int* pos_out = pos_in + n;
  sort_keys_kernel<<<grid_for(n, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(ids.data_as<int>(), keys_in,
                                                                                   pos_in, n, int(V), int(start),
                                                                                   shard);
  CUDA_CHECK_LAUNCH();
  const int bits = bits_for(shard ? V + 1 : V);  // key V marks ids outside a slice
  size_t temp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out, pos_in, pos_out, int(n), 0, bits,
                                             ctx.stream));
  Tensor temp = Tensor::empty({int64_t(std::max<size_t>(temp_bytes, 1))}, DType::UInt8, dwte.device());
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data(), temp_bytes, keys_in, keys_out, pos_in, pos_out, int(n), 0,
                                             bits, ctx.stream));

  RL_DISPATCH_FLOAT(dout.dtype(), T, {
    RL_DISPATCH_FLOAT(dwte.dtype(), G, {
      const int block = int(std::min<int64_t>(kThreads, ceil_div(C, 32) * 32));
      embedding_dwte_kernel<T, G><<<unsigned(n), block, 0, ctx.stream>>>(keys_out, pos_out, dout.data_as<T>(),
                                                                         dwte.data_as<G>(), n, int(C), int(V));
      CUDA_CHECK_LAUNCH();
      if (dwpe.defined()) {
        embedding_dwpe_kernel<T, G><<<grid_for(Tn * C, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(
            dout.data_as<T>(), dwpe.data_as<G>(), int(B), Tn, int(C));
        CUDA_CHECK_LAUNCH();
      }
    });
  });
}

}  // namespace

Tensor embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe) {
  return forward_rows(ids, wte, wpe, 0, false);
}

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe) {
  backward_rows(ids, dout, dwte, dwpe, 0, false);
}

Tensor embedding_shard_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe, int64_t vocab_start) {
  return forward_rows(ids, wte, wpe, vocab_start, true);
}

void embedding_shard_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe, int64_t vocab_start) {
  backward_rows(ids, dout, dwte, dwpe, vocab_start, true);
}

}  // namespace ringloom::cuda
