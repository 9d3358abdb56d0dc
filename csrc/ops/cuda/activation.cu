// GELU (tanh form) and SwiGLU, forward and backward (which may also write the forward
// output); the math is in ops/activation.h and its scalar formulas, shared with the CPU, in
// ops/activation_math.h. Memory-bound: each kernel reads its inputs and writes its outputs
// once, 16 bytes per access where the sizes allow, with all arithmetic in fp32. GELU runs
// on the elementwise map kernel (map.cuh); SwiGLU reads the two halves of each packed row,
// so it has its own loop.
#include "ops/activation.h"
#include "ops/activation_math.h"
#include "ops/cuda/map.cuh"

namespace ringloom::cuda {

namespace {

constexpr int kThreads = 256;

// 1 / (1 + e^-a) on the fast exp: a -> -inf gives 1 / inf = 0, a -> +inf gives 1.
struct FastSigmoid {
  __device__ float operator()(float a) const { return 1.0f / (1.0f + __expf(-a)); }
};

struct GeluForward {
  __device__ float operator()(float x) const { return act::gelu(x, FastSigmoid{}); }
};

struct GeluBackward {
  __device__ float operator()(float dy, float x) const { return act::gelu_grad(dy, x, FastSigmoid{}).dx; }
};

// The gradient and the forward value (activation recomputation), one pass over x.
struct GeluBackwardWithValue {
  __device__ map::Values<2> operator()(float dy, float x) const {
    const act::GeluGrad g = act::gelu_grad(dy, x, FastSigmoid{});
    return {{g.dx, g.y}};
  }
};

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
      for (int k = 0; k < N; ++k) po.v[k] = from_f32<T>(act::swiglu(to_f32(pa.v[k]), to_f32(pb.v[k]), FastSigmoid{}));
      store_pack(out, po);
    } else {
      *out = from_f32<T>(act::swiglu(to_f32(*a), to_f32(*b), FastSigmoid{}));
    }
  }
}

// y, when not null, also receives the forward output (one more store per element).
template <typename T, bool kVec>
__global__ void swiglu_backward_kernel(const T* dy, const T* x, T* dx, T* y, int64_t rows, int64_t F) {
  constexpr int N = kVec ? Pack<T>::kN : 1;
  const int64_t packs = rows * F / N, per_row = F / N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < packs; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / per_row, f = (i - r * per_row) * N;
    const int64_t xo = r * 2 * F + f;
    if constexpr (kVec) {
      Pack<T> pd = load_pack(dy + r * F + f), pa = load_pack(x + xo), pb = load_pack(x + xo + F), da, db, py;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const act::SwigluGrad g = act::swiglu_grad(to_f32(pd.v[k]), to_f32(pa.v[k]), to_f32(pb.v[k]), FastSigmoid{});
        da.v[k] = from_f32<T>(g.da);
        db.v[k] = from_f32<T>(g.db);
        py.v[k] = from_f32<T>(g.y);
      }
      store_pack(dx + xo, da);
      store_pack(dx + xo + F, db);
      if (y) store_pack(y + r * F + f, py);
    } else {
      const act::SwigluGrad g =
          act::swiglu_grad(to_f32(dy[r * F + f]), to_f32(x[xo]), to_f32(x[xo + F]), FastSigmoid{});
      dx[xo] = from_f32<T>(g.da);
      dx[xo + F] = from_f32<T>(g.db);
      if (y) y[r * F + f] = from_f32<T>(g.y);
    }
  }
}

}  // namespace

Tensor gelu_forward(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.numel() == 0) return y;
  OpContext ctx(x);
  RL_DISPATCH_FLOAT(x.dtype(), T, map::launch(ctx, GeluForward{}, x.numel(), y.data_as<T>(), x.data_as<T>()));
  return y;
}

Tensor gelu_backward(const Tensor& dy, const Tensor& x, Tensor* y) {
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (y) *y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.numel() == 0) return dx;
  OpContext ctx(x);
  RL_DISPATCH_FLOAT(x.dtype(), T, {
    if (y)
      map::launch_outputs(ctx, GeluBackwardWithValue{}, x.numel(), map::Outputs<T, 2>{{dx.data_as<T>(), y->data_as<T>()}},
                          dy.data_as<T>(), x.data_as<T>());
    else
      map::launch(ctx, GeluBackward{}, x.numel(), dx.data_as<T>(), dy.data_as<T>(), x.data_as<T>());
  });
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

Tensor swiglu_backward(const Tensor& dy, const Tensor& x, Tensor* y) {
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (y) *y = Tensor::empty(dy.shape(), x.dtype(), x.device());
  const int64_t F = x.size(-1) / 2;
  const int64_t rows = leading_rows(x.shape());
  if (dx.numel() == 0) return dx;
  OpContext ctx(x);
  RL_DISPATCH_FLOAT(x.dtype(), T, {
    const T* pd = dy.data_as<T>();
    const T* px = x.data_as<T>();
    T* po = dx.data_as<T>();
    T* py = y ? y->data_as<T>() : nullptr;
    if (F % Pack<T>::kN == 0 && aligned16(pd) && aligned16(px) && aligned16(po) && (!py || aligned16(py)))
      swiglu_backward_kernel<T, true><<<grid_for(rows * F / Pack<T>::kN, kThreads, ctx.device), kThreads, 0,
                                        ctx.stream>>>(pd, px, po, py, rows, F);
    else
      swiglu_backward_kernel<T, false>
          <<<grid_for(rows * F, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(pd, px, po, py, rows, F);
  });
  CUDA_CHECK_LAUNCH();
  return dx;
}

}  // namespace ringloom::cuda
