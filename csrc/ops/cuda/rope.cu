// Rotary position embedding applied in place; the math is in ops/rope.h.
//
// Angles t * theta_i reach thousands of radians, where an fp32 product alone is off by
// ~t * 6e-8 rad, more than fp32 tolerance on cos and sin. So a first tiny kernel builds the
// [T, D/2] table of cos/sin with the angle in double (T * D/2 entries: 32K for T=1024,
// D=64), and the apply kernel reads it from L2 while streaming x once: each thread rotates
// a pack of pairs (x[i..i+N), x[i+D/2..i+D/2+N)) with two 16-byte loads and stores.
#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/rope.h"

namespace ringloom::cuda {

namespace {

constexpr int kThreads = 256;

// table[t][i] = (cos, sign * sin) of (pos_offset + t) * base^(-2i/D).
__global__ void rope_table_kernel(float2* table, int64_t T, int half, int D, double log_base, int64_t pos_offset,
                                  float sign) {
  const int64_t n = T * half;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / half;
    const int i = int(e - t * half);
    const double theta = exp(-2.0 * i / D * log_base);
    double s, c;
    sincos(double(pos_offset + t) * theta, &s, &c);
    table[e] = make_float2(float(c), sign * float(s));
  }
}

// x[B, T, H, D]; rotates heads [0, n_rot) of every (b, t). Work item: (b, t, h, pack of N
// pairs). kVec: D/2 is a multiple of the pack width and x is aligned.
template <typename T, bool kVec>
__global__ void rope_apply_kernel(T* x, const float2* table, int64_t BT, int64_t T_len, int H, int n_rot, int D) {
  constexpr int N = kVec ? Pack<T>::kN : 1;
  const int half = D / 2, packs_per_head = half / N;
  const int64_t items = BT * n_rot * packs_per_head;
  for (int64_t it = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; it < items; it += int64_t(gridDim.x) * blockDim.x) {
    const int64_t head_row = it / packs_per_head;  // (b, t, h) with h < n_rot
    const int i0 = int(it - head_row * packs_per_head) * N;
    const int64_t bt = head_row / n_rot;
    const int h = int(head_row - bt * n_rot);
    const int64_t t = bt % T_len;
    T* lo = x + (bt * H + h) * D + i0;
    T* hi = lo + half;
    const float2* cs = table + t * half + i0;
    float a[N], b[N], ya[N], yb[N];
    if constexpr (kVec) {
      load_vec<T, N>(lo, a);
      load_vec<T, N>(hi, b);
    } else {
      a[0] = to_f32(*lo);
      b[0] = to_f32(*hi);
    }
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const float2 r = cs[k];
      ya[k] = a[k] * r.x - b[k] * r.y;
      yb[k] = b[k] * r.x + a[k] * r.y;
    }
    if constexpr (kVec) {
      store_vec<T, N>(lo, ya);
      store_vec<T, N>(hi, yb);
    } else {
      *lo = from_f32<T>(ya[0]);
      *hi = from_f32<T>(yb[0]);
    }
  }
}

}  // namespace

void rope_apply(Tensor& x, int64_t n_rot_heads, float base, int64_t pos_offset, bool inverse) {
  const int64_t B = x.size(0), Tn = x.size(1), H = x.size(2), D = x.size(3);
  const int half = int(D / 2);
  if (x.numel() == 0 || n_rot_heads == 0 || half == 0) return;
  OpContext ctx(x);
  Tensor table = Tensor::empty({Tn, int64_t(half), 2}, DType::Float32, x.device());
  float2* tab = reinterpret_cast<float2*>(table.data());
  rope_table_kernel<<<grid_for(Tn * half, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(
      tab, Tn, half, int(D), std::log(double(base)), pos_offset, inverse ? -1.0f : 1.0f);
  CUDA_CHECK_LAUNCH();
  RL_DISPATCH_FLOAT(x.dtype(), T, {
    T* px = x.data_as<T>();
    if (half % Pack<T>::kN == 0 && aligned16(px)) {
      const int64_t items = B * Tn * n_rot_heads * (half / Pack<T>::kN);
      rope_apply_kernel<T, true><<<grid_for(items, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(
          px, tab, B * Tn, Tn, int(H), int(n_rot_heads), int(D));
    } else {
      const int64_t items = B * Tn * n_rot_heads * half;
      rope_apply_kernel<T, false><<<grid_for(items, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(
          px, tab, B * Tn, Tn, int(H), int(n_rot_heads), int(D));
    }
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace ringloom::cuda
