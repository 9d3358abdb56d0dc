// Multi-tensor AdamW and global gradient norm; the math is in ops/adamw.h.
//
// One launch covers every parameter tensor: a device table lists the tensors (pointers,
// sizes, weight decay, dtypes) and a second one the launch's blocks, each a chunk of
// kChunk elements of one tensor. The tables depend only on the tensors, not on the step,
// so they are built and uploaded once and cached (below); a training loop pays no upload
// after step 1 for its sizes, and an asynchronous one for pointers that moved.
// Step-dependent scalars (lr, bias corrections) travel as kernel arguments (or, for a CUDA
// Graph replay, are read from a device buffer: ops/adamw.h), and the clip
// factor is computed on the device from the grad_norm tensor, so a step never waits on
// the host.
//
// Bytes per fp32 parameter: read p, g, m, v (16) and write p, m, v (12) = 28, plus 2 for a
// bf16 compute copy; 124M parameters move 3.5 GB, about 1.2 ms at 3 TB/s.
//
// grad_norm is two launches: each block writes the sum of squares of its chunk (fp32
// within a block, which sums at most kChunk terms), then one block adds the partials in
// double in a fixed order and writes sqrt of the total. No atomics: reproducible bits.
#include <cmath>
#include <cstring>
#include <list>
#include <mutex>

#include "ops/adamw.h"
#include "ops/cuda/common.cuh"

namespace ringloom::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 16384;  // elements per block: 16 float4 per thread

enum : uint8_t { kNone = 0, kF32 = 1, kBF16 = 2 };

struct TensorSlot {
  float* p;
  const void* g;
  float* m;
  float* v;
  void* c;  // compute copy, or null
  int64_t n;
  float wd;
  uint8_t g_kind, c_kind, vec_ok;  // vec_ok: every pointer aligned for 4-element vectors
};

struct BlockSlot {
  int tensor;
  int64_t start;
};
static_assert(sizeof(TensorSlot) % sizeof(int64_t) == 0, "TensorSlot is hashed as int64 words");

// ---- the cached device tables ----
//
// Two caches, because the two tables change at different rates. The block table depends
// only on the tensors' sizes; it is large (one entry per kChunk elements: 75K for 1.2B
// parameters) and built once. The tensor table holds the pointers, which move when
// gradients are released between steps and allocated again by the next backward
// (Layer::release_grads); it is small (one entry per tensor) and, on a miss, uploaded with
// an asynchronous copy on the op's stream, so a step whose gradients moved neither waits
// for the device nor rebuilds the block table. Both ops run on the device's current stream,
// the one the copies go to, so a table is read after its upload in stream order.

struct Tables {
  Tensor tensors, blocks;  // device copies of TensorSlot[] and BlockSlot[]
  int nblocks = 0;
};
struct CacheEntry {
  std::vector<int64_t> key;
  Tensor table;
};

uint8_t kind_of(const Tensor& t) { return !t.defined() ? kNone : t.dtype() == DType::Float32 ? kF32 : kBF16; }

bool aligned_for_vec(const void* p, uint8_t kind) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  return kind == kNone || (a & (kind == kF32 ? 15 : 7)) == 0;
}

// The device copy of `bytes` from host memory, enqueued on `stream` (pageable source: the
// driver stages it before returning, so `src` may go away afterwards). Not inside a CUDA
// Graph capture: the copy would be recorded from host memory that is gone at replay.
Tensor upload(const void* src, size_t bytes, Device dev, cudaStream_t stream) {
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream, &capturing));
  RL_CHECK(capturing == cudaStreamCaptureStatusNone, Runtime, "adamw/grad_norm: these tensors' table is not built "
           "yet and cannot be uploaded while a CUDA Graph is captured; run one step with the same tensors before "
           "capturing");
  Tensor t = Tensor::empty({int64_t(std::max<size_t>(bytes, 1))}, DType::UInt8, dev);
  if (bytes) CUDA_CHECK(cudaMemcpyAsync(t.data(), src, bytes, cudaMemcpyHostToDevice, stream));
  return t;
}

// The device table for `key` (most recently used first; a few entries), built by make()
// as (host pointer, bytes) on a miss.
template <typename Make>
Tensor cached(std::list<CacheEntry>& cache, std::vector<int64_t>&& key, Device dev, cudaStream_t stream, Make make) {
  for (auto it = cache.begin(); it != cache.end(); ++it) {
    if (it->key == key) {
      cache.splice(cache.begin(), cache, it);
      return cache.front().table;
    }
  }
  const auto [src, bytes] = make();
  cache.push_front({std::move(key), upload(src, bytes, dev, stream)});
  if (cache.size() > 8) cache.pop_back();
  return cache.front().table;
}

// Builds (or finds) the tables for these tensors. `params` etc. may be empty (grad_norm).
Tables get_tables(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                  const std::vector<Tensor>& m, const std::vector<Tensor>& v, const std::vector<float>& wd,
                  const std::vector<Tensor>& compute, Device dev, cudaStream_t stream) {
  static std::mutex mu;
  static std::list<CacheEntry> tensor_cache, block_cache;
  const size_t n = grads.size();
  std::vector<TensorSlot> slots(n);
  std::vector<int64_t> sizes{dev.index};
  for (size_t i = 0; i < n; ++i) {
    TensorSlot& s = slots[i];
    std::memset(&s, 0, sizeof(s));
    s.g = grads[i].data();
    s.g_kind = kind_of(grads[i]);
    s.n = grads[i].numel();
    sizes.push_back(s.n);
    if (!params.empty()) {
      s.p = params[i].data_as<float>();
      s.m = m[i].data_as<float>();
      s.v = v[i].data_as<float>();
      s.wd = wd[i];
    }
    if (!compute.empty()) {
      s.c = compute[i].data();
      s.c_kind = kind_of(compute[i]);
    }
    s.vec_ok = aligned_for_vec(s.p, kF32) && aligned_for_vec(s.m, kF32) && aligned_for_vec(s.v, kF32) &&
               aligned_for_vec(s.g, s.g_kind) && aligned_for_vec(s.c, s.c_kind);
  }
  std::vector<int64_t> key(reinterpret_cast<const int64_t*>(slots.data()),
                           reinterpret_cast<const int64_t*>(slots.data() + n));
  key.push_back(dev.index);
  Tables t;
  for (size_t i = 0; i < n; ++i) t.nblocks += int(ceil_div(slots[i].n, kChunk));
  std::lock_guard<std::mutex> lock(mu);
  t.tensors = cached(tensor_cache, std::move(key), dev, stream,
                     [&] { return std::pair<const void*, size_t>(slots.data(), n * sizeof(TensorSlot)); });
  std::vector<BlockSlot> blocks;
  t.blocks = cached(block_cache, std::move(sizes), dev, stream, [&] {
    blocks.reserve(size_t(t.nblocks));
    for (size_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < slots[i].n; s += kChunk) blocks.push_back({int(i), s});
    return std::pair<const void*, size_t>(blocks.data(), blocks.size() * sizeof(BlockSlot));
  });
  return t;
}

// ---- kernels ----

template <int N>
__device__ __forceinline__ void load_grad(const void* g, uint8_t kind, int64_t i, float (&out)[N]) {
  if (kind == kF32) {
    if constexpr (N == 4) {
      const float4 q = *reinterpret_cast<const float4*>(static_cast<const float*>(g) + i);
      out[0] = q.x, out[1] = q.y, out[2] = q.z, out[3] = q.w;
    } else {
      out[0] = static_cast<const float*>(g)[i];
    }
  } else {
    const bf16* b = static_cast<const bf16*>(g) + i;
    if constexpr (N == 4) {
      const uint2 q = *reinterpret_cast<const uint2*>(b);
      const bf16* h = reinterpret_cast<const bf16*>(&q);
#pragma unroll
      for (int k = 0; k < 4; ++k) out[k] = __bfloat162float(h[k]);
    } else {
      out[0] = __bfloat162float(*b);
    }
  }
}

template <int N>
__device__ __forceinline__ void load_f32(const float* p, float (&out)[N]) {
  if constexpr (N == 4) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    out[0] = q.x, out[1] = q.y, out[2] = q.z, out[3] = q.w;
  } else {
    out[0] = *p;
  }
}
template <int N>
__device__ __forceinline__ void store_f32(float* p, const float (&in)[N]) {
  if constexpr (N == 4) *reinterpret_cast<float4*>(p) = make_float4(in[0], in[1], in[2], in[3]);
  else *p = in[0];
}

struct AdamScalars {
  float lr, b1, b2, eps, inv_bc1, inv_bc2, max_norm;
};

// Updates N consecutive elements starting at i.
template <int N>
__device__ __forceinline__ void adamw_update(const TensorSlot& t, int64_t i, const AdamScalars& a, float clip) {
  float p[N], g[N], m[N], v[N];
  load_f32<N>(t.p + i, p);
  load_grad<N>(t.g, t.g_kind, i, g);
  load_f32<N>(t.m + i, m);
  load_f32<N>(t.v + i, v);
#pragma unroll
  for (int k = 0; k < N; ++k) {
    // Same expression order as the CPU op, so the two agree to the last bits or close.
    const float gk = g[k] * clip;
    m[k] = a.b1 * m[k] + (1.0f - a.b1) * gk;
    v[k] = a.b2 * v[k] + (1.0f - a.b2) * gk * gk;
    p[k] = p[k] - a.lr * ((m[k] * a.inv_bc1) / (sqrtf(v[k] * a.inv_bc2) + a.eps) + t.wd * p[k]);
  }
  store_f32<N>(t.p + i, p);
  store_f32<N>(t.m + i, m);
  store_f32<N>(t.v + i, v);
  if (t.c_kind == kF32) {
    store_f32<N>(static_cast<float*>(t.c) + i, p);
  } else if (t.c_kind == kBF16) {
    bf16* c = static_cast<bf16*>(t.c) + i;
    if constexpr (N == 4) {
      uint2 q;
      bf16* h = reinterpret_cast<bf16*>(&q);
#pragma unroll
      for (int k = 0; k < 4; ++k) h[k] = __float2bfloat16(p[k]);
      *reinterpret_cast<uint2*>(c) = q;
    } else {
      *c = __float2bfloat16(p[0]);
    }
  }
}

// scalars: null, or [lr, 1/bc1, 1/bc2] in device memory (a replayed CUDA Graph: ops/adamw.h).
__global__ void __launch_bounds__(kThreads) adamw_kernel(const TensorSlot* __restrict__ tensors,
                                                         const BlockSlot* __restrict__ blocks, AdamScalars a,
                                                         const float* __restrict__ norm,
                                                         const float* __restrict__ scalars) {
  if (scalars) {
    a.lr = scalars[0];
    a.inv_bc1 = scalars[1];
    a.inv_bc2 = scalars[2];
  }
  const BlockSlot b = blocks[blockIdx.x];
  const TensorSlot t = tensors[b.tensor];
  // clip = min(1, max_norm / (norm + 1e-6)), read on the device: no host sync.
  const float clip = a.max_norm > 0.0f ? fminf(1.0f, a.max_norm / (*norm + 1e-6f)) : 1.0f;
  const int64_t end = min(b.start + kChunk, t.n);
  int64_t i = b.start;
  if (t.vec_ok) {
    const int64_t vec_end = b.start + (end - b.start) / 4 * 4;
    for (i = b.start + threadIdx.x * 4; i < vec_end; i += kThreads * 4) adamw_update<4>(t, i, a, clip);
    i = vec_end;
  }
  for (int64_t j = i + threadIdx.x; j < end; j += kThreads) adamw_update<1>(t, j, a, clip);
}

__global__ void __launch_bounds__(kThreads) sumsq_kernel(const TensorSlot* __restrict__ tensors,
                                                         const BlockSlot* __restrict__ blocks,
                                                         float* __restrict__ partial) {
  __shared__ float scratch[32];
  const BlockSlot b = blocks[blockIdx.x];
  const TensorSlot t = tensors[b.tensor];
  const int64_t end = min(b.start + kChunk, t.n);
  float acc = 0.0f;
  int64_t i = b.start;
  if (t.vec_ok) {
    const int64_t vec_end = b.start + (end - b.start) / 4 * 4;
    for (i = b.start + threadIdx.x * 4; i < vec_end; i += kThreads * 4) {
      float g[4];
      load_grad<4>(t.g, t.g_kind, i, g);
      acc += g[0] * g[0] + g[1] * g[1] + g[2] * g[2] + g[3] * g[3];
    }
    i = vec_end;
  }
  for (int64_t j = i + threadIdx.x; j < end; j += kThreads) {
    float g[1];
    load_grad<1>(t.g, t.g_kind, j, g);
    acc += g[0] * g[0];
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// One block: out = sqrt(sum of partials), added in double in a fixed order.
__global__ void sqrt_sum_kernel(const float* __restrict__ partial, int n, float* __restrict__ out) {
  __shared__ double s[1024];
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += double(partial[i]);
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = float(sqrt(s[0]));
}

}  // namespace

void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                const std::vector<Tensor>& v, const std::vector<float>& weight_decay,
                const std::vector<Tensor>& compute, const Tensor& grad_norm, const AdamWConfig& cfg) {
  if (params.empty()) return;
  OpContext ctx(params[0]);
  const Tables t = get_tables(params, grads, m, v, weight_decay, compute, params[0].device(), ctx.stream);
  if (t.nblocks == 0) return;
  // Bias corrections in double (adamw_step_scalars): 1 - 0.999^1 keeps only four good digits in fp32 pow.
  const AdamWStepScalars sc = adamw_step_scalars(cfg);
  AdamScalars a{sc.lr, cfg.beta1, cfg.beta2, cfg.eps, sc.inv_bc1, sc.inv_bc2, cfg.max_norm};
  const float* norm = cfg.max_norm > 0 ? grad_norm.data_as<float>() : nullptr;
  const float* scalars = cfg.scalars.defined() ? cfg.scalars.data_as<float>() : nullptr;
  adamw_kernel<<<t.nblocks, kThreads, 0, ctx.stream>>>(reinterpret_cast<const TensorSlot*>(t.tensors.data()),
                                                       reinterpret_cast<const BlockSlot*>(t.blocks.data()), a, norm,
                                                       scalars);
  CUDA_CHECK_LAUNCH();
}

namespace {
__global__ void write_scalars_kernel(float* out, float lr, float inv_bc1, float inv_bc2) {
  out[0] = lr, out[1] = inv_bc1, out[2] = inv_bc2;
}
}  // namespace

// A kernel rather than a host copy: the values travel as launch arguments, so the write is
// ordered on the stream after the previous step's update without the host waiting.
void adamw_write_scalars(const Tensor& scalars, const AdamWConfig& cfg) {
  OpContext ctx(scalars);
  const AdamWStepScalars sc = adamw_step_scalars(cfg);
  write_scalars_kernel<<<1, 1, 0, ctx.stream>>>(scalars.data_as<float>(), sc.lr, sc.inv_bc1, sc.inv_bc2);
  CUDA_CHECK_LAUNCH();
}

Tensor grad_norm(const std::vector<Tensor>& grads) {
  const Device dev = grads[0].device();
  Tensor out = Tensor::empty({1}, DType::Float32, dev);
  OpContext ctx(grads[0]);
  const Tables t = get_tables({}, grads, {}, {}, {}, {}, dev, ctx.stream);
  if (t.nblocks == 0) {
    CUDA_CHECK(cudaMemsetAsync(out.data(), 0, sizeof(float), ctx.stream));
    return out;
  }
  Tensor partial = Tensor::empty({t.nblocks}, DType::Float32, dev);
  sumsq_kernel<<<t.nblocks, kThreads, 0, ctx.stream>>>(reinterpret_cast<const TensorSlot*>(t.tensors.data()),
                                                       reinterpret_cast<const BlockSlot*>(t.blocks.data()),
                                                       partial.data_as<float>());
  CUDA_CHECK_LAUNCH();
  sqrt_sum_kernel<<<1, 1024, 0, ctx.stream>>>(partial.data_as<float>(), t.nblocks, out.data_as<float>());
  CUDA_CHECK_LAUNCH();
  return out;
}

}  // namespace ringloom::cuda
