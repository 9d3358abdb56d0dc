// GELU (tanh form) and SwiGLU, forward and backward; the math is in ops/activation.h.
// Memory-bound: each kernel reads its inputs and writes its outputs once, 16 bytes per
// access where the sizes allow, with all arithmetic in fp32.
#include "ops/activation.h"
#include "ops/cuda/common.cuh"

namespace ringloom::cuda {

namespace {

constexpr int kThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluC = 0.044715f;

struct Gelu {
  __device__ static float fwd(float x) {
    const float u = kSqrt2OverPi * (x + kGeluC * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
  }
  // dy * d/dx [0.5 x (1 + tanh u)]
  __device__ static float bwd(float dy, float x) {
    const float u = kSqrt2OverPi * (x + kGeluC * x * x * x);
    const float t = tanhf(u);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluC * x * x);
    return dy * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du);
  }
};

// Elementwise map over n elements: out[i] = f(in0[i] [, in1[i]]). kVec: 16-byte packs.
template <typename T, bool kVec>
__global__ void gelu_forward_kernel(const T* x, T* y, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if constexpr (kVec) {
    constexpr int N = Pack<T>::kN;
    for (; i < n / N; i += stride) {
      Pack<T> px = load_pack(x + i * N), py;
#pragma unroll
      for (int k = 0; k < N; ++k) py.v[k] = from_f32<T>(Gelu::fwd(to_f32(px.v[k])));
      store_pack(y + i * N, py);
    }
    const int64_t t = (n / N) * N + blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (t < n) y[t] = from_f32<T>(Gelu::fwd(to_f32(x[t])));
  } else {
    for (; i < n; i += stride) y[i] = from_f32<T>(Gelu::fwd(to_f32(x[i])));
  }
}

template <typename T, bool kVec>
__global__ void gelu_backward_kernel(const T* dy, const T* x, T* dx, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if constexpr (kVec) {
    constexpr int N = Pack<T>::kN;
    for (; i < n / N; i += stride) {
      Pack<T> pd = load_pack(dy + i * N), px = load_pack(x + i * N), po;
#pragma unroll
      for (int k = 0; k < N; ++k) po.v[k] = from_f32<T>(Gelu::bwd(to_f32(pd.v[k]), to_f32(px.v[k])));
      store_pack(dx + i * N, po);
    }
    const int64_t t = (n / N) * N + blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (t < n) dx[t] = from_f32<T>(Gelu::bwd(to_f32(dy[t]), to_f32(x[t])));
  } else {
    for (; i < n; i += stride) dx[i] = from_f32<T>(Gelu::bwd(to_f32(dy[i]), to_f32(x[i])));
  }
}

__device__ __forceinline__ float sigmoid(float a) { return 1.0f / (1.0f + __expf(-a)); }

// SwiGLU over rows of x[R, 2F] -> y[R, F]. Element j of the output (row r = j / F, column
// f = j % F) reads a = x[r, f] and b = x[r, F + f]. kVec: F is a multiple of the pack width
// and the pointers are aligned, so a pack never straddles a row.
template <typename T, bool kVec>
__global__ void swiglu_forward_kernel(const T* x, T* y, int64_t rows, int64_t F) {
  constexpr int N = kVec ? Pack<T>::kN : 1;
  const int64_t packs = rows * F / N, per_row = F / N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < packs; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / per_row, f = (i - r * per_row) * N;
    const T* a = x + r * 2 * F + f;
    const T* b = a + F;
    T* out = y + r * F + f;
    if constexpr (kVec) {
      Pack<T> pa = load_pack(a), pb = load_pack(b), po;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const float av = to_f32(pa.v[k]);
        po.v[k] = from_f32<T>(av * sigmoid(av) * to_f32(pb.v[k]));
      }
      store_pack(out, po);
    } else {
      const float av = to_f32(*a);
      *out = from_f32<T>(av * sigmoid(av) * to_f32(*b));
    }
  }
}

// da = dy * b * s (1 + a (1 - s)),  db = dy * a * s,  with s = sigmoid(a).
template <typename T, bool kVec>
__global__ void swiglu_backward_kernel(const T* dy, const T* x, T* dx, int64_t rows, int64_t F) {
  constexpr int N = kVec ? Pack<T>::kN : 1;
  const int64_t packs = rows * F / N, per_row = F / N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < packs; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / per_row, f = (i - r * per_row) * N;
    const int64_t xo = r * 2 * F + f;
    if constexpr (kVec) {
      Pack<T> pd = load_pack(dy + r * F + f), pa = load_pack(x + xo), pb = load_pack(x + xo + F), da, db;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const float a = to_f32(pa.v[k]), b = to_f32(pb.v[k]), g = to_f32(pd.v[k]), s = sigmoid(a);
        da.v[k] = from_f32<T>(g * b * s * (1.0f + a * (1.0f - s)));
        db.v[k] = from_f32<T>(g * a * s);
      }
      store_pack(dx + xo, da);
      store_pack(dx + xo + F, db);
    } else {
      const float a = to_f32(x[xo]), b = to_f32(x[xo + F]), g = to_f32(dy[r * F + f]), s = sigmoid(a);
      dx[xo] = from_f32<T>(g * b * s * (1.0f + a * (1.0f - s)));
      dx[xo + F] = from_f32<T>(g * a * s);
    }
  }
}

}  // namespace

Tensor gelu_forward(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t n = x.numel();
  if (n == 0) return y;
  OpContext ctx(x);
  RL_DISPATCH_FLOAT(x.dtype(), T, {
    const T* px = x.data_as<T>();
    T* py = y.data_as<T>();
    if (aligned16(px) && aligned16(py))
      gelu_forward_kernel<T, true>
          <<<grid_for(ceil_div(n, Pack<T>::kN), kThreads, ctx.device), kThreads, 0, ctx.stream>>>(px, py, n);
    else
      gelu_forward_kernel<T, false><<<grid_for(n, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(px, py, n);
  });
  CUDA_CHECK_LAUNCH();
  return y;
}

Tensor gelu_backward(const Tensor& dy, const Tensor& x) {
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t n = x.numel();
  if (n == 0) return dx;
  OpContext ctx(x);
  RL_DISPATCH_FLOAT(x.dtype(), T, {
    const T* pd = dy.data_as<T>();
    const T* px = x.data_as<T>();
    T* po = dx.data_as<T>();
    if (aligned16(pd) && aligned16(px) && aligned16(po))
      gelu_backward_kernel<T, true>
          <<<grid_for(ceil_div(n, Pack<T>::kN), kThreads, ctx.device), kThreads, 0, ctx.stream>>>(pd, px, po, n);
    else
      gelu_backward_kernel<T, false><<<grid_for(n, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(pd, px, po, n);
  });
  CUDA_CHECK_LAUNCH();
  return dx;
}

Tensor swiglu_forward(const Tensor& x) {
  Shape s = x.shape();
  const int64_t F = s.back() / 2;
  s.back() = F;
  Tensor y = Tensor::empty(s, x.dtype(), x.device());
  const int64_t rows = leading_rows(x.shape());
  if (y.numel() == 0) return y;
  OpContext ctx(x);
  RL_DISPATCH_FLOAT(x.dtype(), T, {
    const T* px = x.data_as<T>();
    T* py = y.data_as<T>();
    if (F % Pack<T>::kN == 0 && aligned16(px) && aligned16(py))
      swiglu_forward_kernel<T, true><<<grid_for(rows * F / Pack<T>::kN, kThreads, ctx.device), kThreads, 0,
                                       ctx.stream>>>(px, py, rows, F);
    else
      swiglu_forward_kernel<T, false>
          <<<grid_for(rows * F, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(px, py, rows, F);
  });
  CUDA_CHECK_LAUNCH();
  return y;
}

Tensor swiglu_backward(const Tensor& dy, const Tensor& x) {
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t F = x.size(-1) / 2;
  const int64_t rows = leading_rows(x.shape());
  if (dx.numel() == 0) return dx;
  OpContext ctx(x);
  RL_DISPATCH_FLOAT(x.dtype(), T, {
    const T* pd = dy.data_as<T>();
    const T* px = x.data_as<T>();
    T* po = dx.data_as<T>();
    if (F % Pack<T>::kN == 0 && aligned16(pd) && aligned16(px) && aligned16(po))
      swiglu_backward_kernel<T, true><<<grid_for(rows * F / Pack<T>::kN, kThreads, ctx.device), kThreads, 0,
                                        ctx.stream>>>(pd, px, po, rows, F);
    else
      swiglu_backward_kernel<T, false>
          <<<grid_for(rows * F, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(pd, px, po, rows, F);
  });
  CUDA_CHECK_LAUNCH();
  return dx;
}

}  // namespace ringloom::cuda
