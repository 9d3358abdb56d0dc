// CPU attention (fp32): the math is in ops/attention.h. Unlike the GPU kernel this one
// does materialise scores, but only a block of them at a time: for each (batch, query
// head) it walks the queries in blocks of kRowBlock rows and forms the score block
// S[rows, 0:cols] (cols = end of the block when causal, so the masked upper triangle is
// mostly skipped, else T) in a thread-local buffer. The products are sgemm calls that read
// the heads in place: a head's rows of qkv[b, :, h, :] are D contiguous floats every
// (Hq + 2Hkv) * D floats, which is an ordinary row-major matrix with a larger leading
// dimension, so no gather is needed.
//
// Parallelism: OpenMP over (batch, query head); the per-head GEMMs are small. OpenBLAS (the
// pthreads build of scipy-openblas) is set to one thread for the duration of the loop, so
// that each OpenMP thread's GEMM runs on that thread instead of also queueing work on
// OpenBLAS's own pool: nested, the two oversubscribe the cores (measured 2-3x slower on
// 2 cores, B=8 T=256 H=6 D=64), and OpenBLAS warns it may hang when called threaded from
// an OpenMP region. The setting is process-wide (OpenBLAS has no reliable per-thread one),
// so it is restored on exit; a BLAS call from another thread meanwhile runs single-threaded.
//
// GQA backward: several query heads share one kv head, so their dk/dv contributions are
// written to per-query-head scratch and summed over the group afterwards; that keeps the
// parallel loop free of races without atomics.
#include "ops/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/cpu/blas.h"
#include "ops/cpu/softmax_math.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ringloom::cpu {

namespace {

constexpr int64_t kRowBlock = 64;

// Sizes and strides of one attention call, all in floats.
struct Geometry {
  int64_t B, T, Hq, Hkv, D, H3;
  int64_t group;       // query heads per kv head
  int64_t qkv_row;     // stride between time steps of one head in qkv: H3 * D
  int64_t out_row;     // stride between time steps of one head in out/dout: Hq * D
  float scale;
  bool causal;

  Geometry(const Tensor& qkv, int64_t n_head, int64_t n_kv_head, bool causal_, float scale_)
      : B(qkv.size(0)), T(qkv.size(1)), Hq(n_head), Hkv(n_kv_head), D(qkv.size(3)), H3(qkv.size(2)),
        group(n_head / n_kv_head), qkv_row(H3 * D), out_row(n_head * D),
        scale(scale_ > 0 ? scale_ : 1.0f / std::sqrt(float(qkv.size(3)))), causal(causal_) {
    // sgemm takes 32-bit sizes and leading dimensions.
    RL_CHECK(T < (int64_t(1) << 31) && qkv_row < (int64_t(1) << 31), Value, "attention (cpu): ", qkv.describe(),
             " exceeds the 32-bit BLAS interface");
  }
  // Offsets of head rows at time 0 of batch b.
  int64_t q_off(int64_t b, int64_t h) const { return b * T * qkv_row + h * D; }
  int64_t k_off(int64_t b, int64_t h) const { return b * T * qkv_row + (Hq + h / group) * D; }
  int64_t v_off(int64_t b, int64_t h) const { return b * T * qkv_row + (Hq + Hkv + h / group) * D; }
  int64_t o_off(int64_t b, int64_t h) const { return b * T * out_row + h * D; }
  // Number of key columns row block [i0, i1) attends to.
  int64_t cols(int64_t i1) const { return causal ? i1 : T; }
};

// Keeps OpenBLAS single-threaded for the lifetime of the guard when we run our own threads.
class BlasSingleThread {
 public:
  BlasSingleThread() {
#ifdef _OPENMP
    if (omp_get_max_threads() > 1) {
      saved_ = scipy_openblas_get_num_threads();
      if (saved_ > 1) scipy_openblas_set_num_threads(1);
    }
#endif
  }
  ~BlasSingleThread() {
    if (saved_ > 1) scipy_openblas_set_num_threads(saved_);
  }
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;

 private:
  int saved_ = 0;
};

// S[r, j] = scale * q_(i0+r) . k_j for the block's rows and keys j < n (ld = n); no masking here.
void scores(const Geometry& g, const float* q, const float* k, int64_t i0, int64_t rows, int64_t n, float* S) {
  sgemm(false, true, rows, n, g.D, g.scale, q + i0 * g.qkv_row, g.qkv_row, k, g.qkv_row, 0.0f, S, n);
}

}  // namespace

std::pair<Tensor, Tensor> attention_forward(const Tensor& qkv, int64_t n_head, int64_t n_kv_head, bool causal,
                                            float scale) {
  const Geometry g(qkv, n_head, n_kv_head, causal, scale);
  Tensor out = Tensor::empty({g.B, g.T, g.Hq, g.D}, DType::Float32);
  Tensor lse = Tensor::empty({g.B, g.Hq, g.T}, DType::Float32);
  const float* x = qkv.data_as<float>();
  float* o = out.data_as<float>();
  float* l = lse.data_as<float>();
  const int64_t n_tasks = g.B * g.Hq;
  if (n_tasks == 0 || g.T == 0) return {out, lse};

  BlasSingleThread single;
#pragma omp parallel
  {
    std::vector<float> S(size_t(std::min(kRowBlock, g.T) * g.T));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t b = task / g.Hq, h = task % g.Hq;
      const float* q = x + g.q_off(b, h);
      const float* k = x + g.k_off(b, h);
      const float* v = x + g.v_off(b, h);
      float* ob = o + g.o_off(b, h);
      float* lb = l + (b * g.Hq + h) * g.T;
      for (int64_t i0 = 0; i0 < g.T; i0 += kRowBlock) {
        const int64_t i1 = std::min(i0 + kRowBlock, g.T), rows = i1 - i0, n = g.cols(i1);
        scores(g, q, k, i0, rows, n, S.data());
        // Row softmax with the max subtracted; lse_i = m + log(sum exp(s - m)).
        for (int64_t r = 0; r < rows; ++r) {
          float* s = S.data() + r * n;
          const int64_t last = g.causal ? i0 + r + 1 : n;  // columns [0, last) are visible
          const float m = row_max(s, last);
          exp_shifted(s, s, last, m);
          const double sum = sum_double(s, last);
          const float inv = float(1.0 / sum);
          for (int64_t j = 0; j < last; ++j) s[j] *= inv;
          for (int64_t j = last; j < n; ++j) s[j] = 0.0f;
          lb[i0 + r] = m + float(std::log(sum));
        }
        // out[rows] = P @ V[0:n]
        sgemm(false, false, rows, g.D, n, 1.0f, S.data(), n, v, g.qkv_row, 0.0f, ob + i0 * g.out_row, g.out_row);
      }
    }
  }
  return {out, lse};
}

Tensor attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                          int64_t n_head, int64_t n_kv_head, bool causal, float scale, bool /*deterministic*/) {
  // Always deterministic: every sum runs in a fixed order.
  const Geometry g(qkv, n_head, n_kv_head, causal, scale);
  Tensor dqkv = Tensor::empty(qkv.shape(), DType::Float32);
  const int64_t n_tasks = g.B * g.Hq;
  if (n_tasks == 0 || g.T == 0) return dqkv;
  const float* x = qkv.data_as<float>();
  const float* dy = dout.data_as<float>();
  const float* y = out.data_as<float>();
  const float* l = lse.data_as<float>();
  float* dx = dqkv.data_as<float>();
  // dk and dv of each query head, [B, Hq, 2, T, D], summed over the group below.
  const int64_t TD = g.T * g.D;
  std::vector<float> dkv(size_t(n_tasks * 2 * TD));

  BlasSingleThread single;
#pragma omp parallel
  {
    const int64_t br = std::min(kRowBlock, g.T);
    std::vector<float> P(size_t(br * g.T)), dP(size_t(br * g.T)), Di(static_cast<size_t>(br));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t b = task / g.Hq, h = task % g.Hq;
      const float* q = x + g.q_off(b, h);
      const float* k = x + g.k_off(b, h);
      const float* v = x + g.v_off(b, h);
      const float* yb = y + g.o_off(b, h);
      const float* dyb = dy + g.o_off(b, h);
      const float* lb = l + (b * g.Hq + h) * g.T;
      float* dq = dx + g.q_off(b, h);
      float* dk = dkv.data() + task * 2 * TD;
      float* dv = dk + TD;
      std::fill(dk, dk + 2 * TD, 0.0f);
      for (int64_t i0 = 0; i0 < g.T; i0 += kRowBlock) {
        const int64_t i1 = std::min(i0 + kRowBlock, g.T), rows = i1 - i0, n = g.cols(i1);
        // p_ij = exp(s_ij - lse_i), recomputed from the saved lse.
        scores(g, q, k, i0, rows, n, P.data());
        for (int64_t r = 0; r < rows; ++r) {
          float* p = P.data() + r * n;
          const int64_t last = g.causal ? i0 + r + 1 : n;
          const float li = lb[i0 + r];
          exp_shifted(p, p, last, li);
          for (int64_t j = last; j < n; ++j) p[j] = 0.0f;
          // D_i = dout_i . out_i  (= sum_j p_ij dp_ij, the softmax Jacobian's diagonal term)
          const float* dyi = dyb + (i0 + r) * g.out_row;
          const float* yi = yb + (i0 + r) * g.out_row;
          double acc = 0.0;
          for (int64_t d = 0; d < g.D; ++d) acc += double(dyi[d]) * yi[d];
          Di[r] = float(acc);
        }
        // dv[0:n] += P^T @ dout[rows]
        sgemm(true, false, n, g.D, rows, 1.0f, P.data(), n, dyb + i0 * g.out_row, g.out_row, 1.0f, dv, g.D);
        // dp = dout[rows] @ V[0:n]^T
        sgemm(false, true, rows, n, g.D, 1.0f, dyb + i0 * g.out_row, g.out_row, v, g.qkv_row, 0.0f, dP.data(), n);
        // ds_ij = p_ij (dp_ij - D_i), stored over dp (zero where p is masked)
        for (int64_t r = 0; r < rows; ++r) {
          const float* p = P.data() + r * n;
          float* ds = dP.data() + r * n;
          for (int64_t j = 0; j < n; ++j) ds[j] = p[j] * (ds[j] - Di[r]);
        }
        // dq[rows] = scale * ds @ K[0:n]   (written straight into dqkv)
        sgemm(false, false, rows, g.D, n, g.scale, dP.data(), n, k, g.qkv_row, 0.0f, dq + i0 * g.qkv_row, g.qkv_row);
        // dk[0:n] += scale * ds^T @ Q[rows]
        sgemm(true, false, n, g.D, rows, g.scale, dP.data(), n, q + i0 * g.qkv_row, g.qkv_row, 1.0f, dk, g.D);
      }
    }

    // dk/dv of kv head hk = sum over its query heads; one (b, kv head, k-or-v, t) row per item.
#pragma omp for
    for (int64_t item = 0; item < g.B * g.Hkv * 2 * g.T; ++item) {
      const int64_t t = item % g.T, which = (item / g.T) % 2, hk = (item / (2 * g.T)) % g.Hkv,
                    b = item / (2 * g.T * g.Hkv);
      float* dst = dx + (b * g.T + t) * g.qkv_row + (g.Hq + which * g.Hkv + hk) * g.D;
      const float* src = dkv.data() + ((b * g.Hq + hk * g.group) * 2 + which) * TD + t * g.D;
      std::memcpy(dst, src, size_t(g.D) * sizeof(float));
      for (int64_t e = 1; e < g.group; ++e) {
        const float* s = src + e * 2 * TD;
        for (int64_t d = 0; d < g.D; ++d) dst[d] += s[d];
      }
    }
  }
  return dqkv;
}

}  // namespace ringloom::cpu
