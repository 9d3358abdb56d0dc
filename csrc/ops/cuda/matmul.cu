// Linear-layer GEMMs through cuBLASLt; the math is in ops/matmul.h.
//
// cuBLASLt is column-major. A row-major [R, C] matrix is the column-major [C, R] matrix
// with leading dimension C, so with x[M, K], w[N, K], y[M, N] row-major:
//   forward          y'(N x M)  = w'^T (N x K) x' (K x M)     A = w (T), B = x (N), bias on rows of y'
//   backward input   dx'(K x M) = w'  (K x N) dy' (N x M)     A = w (N), B = dy (N)
//   backward weight  dw'(K x N) = x'  (K x M) dy'^T (M x N)   A = x (N), B = dy (T), beta = 1 accumulates
// The bias add is fused into the forward GEMM's epilogue (CUBLASLT_EPILOGUE_BIAS) and a
// residual comes in as the GEMM's C (D = A B + C, C and D distinct), so y is written once.
// dbias = column sums of dy is a separate deterministic two-stage reduction (the BGRADB
// epilogue overwrites, but dbias must accumulate across micro-batches).
//
// bf16 inputs multiply on the tensor cores with fp32 accumulation; matmul_backward_weight
// writes an fp32 dw straight from bf16 dy and x (cuBLASLt's A/B bf16, C/D fp32 mode).
// fp32 inputs use TF32 tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32): 10-bit mantissas in
// the products, fp32 accumulation; expect ~1e-3 relative error against fp64 (the tf32 row
// of tests/tolerances.py), as PyTorch gives with allow_tf32.
//
// Descriptors, layouts and the heuristic's algorithm choice are cached per shape (and
// per pointer alignment), so a training step pays no heuristic query after the first.
#include <map>
#include <mutex>
#include <tuple>

#include "ops/cuda/common.cuh"
#include "ops/cuda/norm.cuh"
#include "ops/matmul.h"

namespace ringloom::cuda {

namespace {

cudaDataType_t cuda_type(DType t) { return t == DType::Float32 ? CUDA_R_32F : CUDA_R_16BF; }

// Largest power of two (<= 256) dividing the address: what cuBLASLt may assume.
uint32_t alignment_of(const void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

struct GemmSpec {
  int device;
  bool ta, tb;
  int64_t m, n, k, lda, ldb, ldc;
  DType ab_type, cd_type;
  bool bias;
  uint32_t al_a, al_b, al_c;
  auto tie() const {
    return std::tie(device, ta, tb, m, n, k, lda, ldb, ldc, ab_type, cd_type, bias, al_a, al_b, al_c);
  }
  bool operator<(const GemmSpec& o) const { return tie() < o.tie(); }
};

struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo;
};

std::string spec_str(const GemmSpec& s) {
  return str_cat("m=", s.m, " n=", s.n, " k=", s.k, " transa=", s.ta, " transb=", s.tb, " lda=", s.lda,
                 " ldb=", s.ldb, " ldc=", s.ldc, " ", dtype_name(s.ab_type), " -> ", dtype_name(s.cd_type),
                 s.bias ? " +bias" : "");
}

GemmPlan make_plan(const GemmSpec& s) {
  GemmPlan p;
  const bool f32 = s.ab_type == DType::Float32;
  const cublasComputeType_t compute = f32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F));
  const cublasOperation_t ta = s.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = s.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  if (s.bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    const cudaDataType_t bt = cuda_type(s.cd_type);
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
  }
  const cudaDataType_t abt = cuda_type(s.ab_type), cdt = cuda_type(s.cd_type);
  // Stored shapes: A is (ta ? k x m : m x k), B is (tb ? n x k : k x n), C is m x n.
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, abt, s.ta ? s.k : s.m, s.ta ? s.m : s.k, s.lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, abt, s.tb ? s.n : s.k, s.tb ? s.k : s.n, s.ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, cdt, s.m, s.n, s.ldc));

  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = cublaslt_workspace_bytes();
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &s.al_a,
                                                    sizeof(s.al_a)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &s.al_b,
                                                    sizeof(s.al_b)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &s.al_c,
                                                    sizeof(s.al_c)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &s.al_c,
                                                    sizeof(s.al_c)));
  cublasLtMatmulHeuristicResult_t result;
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(cublaslt_handle(s.device), p.desc, p.a, p.b, p.c, p.c,
                                                           pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.desc);
    fail(ErrorKind::Runtime, "cuBLASLt has no algorithm for GEMM ", spec_str(s), " (", cublasGetStatusString(st), ")");
  }
  p.algo = result.algo;
  return p;
}

// D = op(A) op(B) + beta C (+ bias); C and D share a layout and may be the same buffer.
void gemm(const GemmSpec& s, const void* A, const void* B, const void* C, void* D, float beta, const void* bias,
          cudaStream_t stream) {
  static std::mutex mu;
  static std::map<GemmSpec, GemmPlan> plans;
  std::lock_guard<std::mutex> lock(mu);  // also guards the bias pointer set on the cached descriptor
  auto it = plans.find(s);
  if (it == plans.end()) it = plans.emplace(s, make_plan(s)).first;
  const GemmPlan& p = it->second;
  if (s.bias)
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasLtMatmul(cublaslt_handle(s.device), p.desc, &alpha, A, p.a, B, p.b, &beta, C, p.c, D, p.c,
                              &p.algo, cublaslt_workspace(s.device), cublaslt_workspace_bytes(), stream));
}

// C: the output D, or also a distinct C input (then the alignment both share).
GemmSpec spec(int device, bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc,
              DType ab, DType cd, bool bias, const void* A, const void* B, const void* C,
              const void* C_in = nullptr) {
  const uint32_t al_c = C_in ? std::min(alignment_of(C), alignment_of(C_in)) : alignment_of(C);
  return GemmSpec{device, ta, tb, m, n, k, lda, ldb, ldc, ab, cd, bias, alignment_of(A), alignment_of(B), al_c};
}

// y[r, :] = bias (or 0) + residual[r, :] (or 0) for every row: the K = 0 forward.
template <typename T>
__global__ void fill_rows_kernel(T* y, const T* bias, const T* residual, int64_t rows, int64_t N) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * N; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<T>((bias ? to_f32(bias[i % N]) : 0.0f) + (residual ? to_f32(residual[i]) : 0.0f));
}

// partial[blockIdx.y][c] = sum of dy[r, c] over the block's rows (kRowsPerBlock of them),
// in a fixed order: thread row ty takes rows ty, ty + 8, ..., then shared memory adds the 8.
constexpr int kDbiasRows = 256;
template <typename T>
__global__ void column_sums_kernel(const T* dy, float* partial, int64_t M, int64_t N) {
  __shared__ float s[8][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = blockIdx.x * 32LL + tx;
  const int64_t r0 = int64_t(blockIdx.y) * kDbiasRows;
  const int64_t r1 = std::min<int64_t>(r0 + kDbiasRows, M);
  float acc = 0.0f;
  if (c < N)
    for (int64_t r = r0 + ty; r < r1; r += 8) acc += to_f32(dy[r * N + c]);
  s[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && c < N) {
    float total = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) total += s[i][tx];
    partial[int64_t(blockIdx.y) * N + c] = total;
  }
}

}  // namespace

Tensor matmul_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual) {
  const int64_t K = x.size(-1), N = w.size(0);
  const int64_t M = leading_rows(x.shape());
  Shape ys = x.shape();
  ys.back() = N;
  Tensor y = Tensor::empty(ys, x.dtype(), x.device());
  if (M == 0 || N == 0) return y;
  OpContext ctx(x);
  if (K == 0) {
    RL_DISPATCH_FLOAT(x.dtype(), T, {
      fill_rows_kernel<T><<<grid_for(M * N, 256, ctx.device), 256, 0, ctx.stream>>>(
          y.data_as<T>(), bias.defined() ? bias.data_as<T>() : nullptr,
          residual.defined() ? residual.data_as<T>() : nullptr, M, N);
    });
    CUDA_CHECK_LAUNCH();
    return y;
  }
  const void* r = residual.defined() ? residual.data() : nullptr;
  const GemmSpec s = spec(ctx.device, true, false, N, M, K, K, K, N, x.dtype(), x.dtype(), bias.defined(), w.data(),
                          x.data(), y.data(), r);
  gemm(s, w.data(), x.data(), r ? r : y.data(), y.data(), r ? 1.0f : 0.0f, bias.defined() ? bias.data() : nullptr,
       ctx.stream);
  return y;
}

Tensor matmul_backward_input(const Tensor& dy, const Tensor& w) {
  const int64_t N = w.size(0), K = w.size(1);
  const int64_t M = leading_rows(dy.shape());
  Shape xs = dy.shape();
  xs.back() = K;
  Tensor dx = Tensor::empty(xs, dy.dtype(), dy.device());
  if (M == 0 || K == 0) return dx;
  OpContext ctx(dy);
  if (N == 0) {
    CUDA_CHECK(cudaMemsetAsync(dx.data(), 0, dx.nbytes(), ctx.stream));
    return dx;
  }
  const GemmSpec s = spec(ctx.device, false, false, K, M, N, K, N, K, dy.dtype(), dy.dtype(), false, w.data(),
                          dy.data(), dx.data());
  gemm(s, w.data(), dy.data(), dx.data(), dx.data(), 0.0f, nullptr, ctx.stream);
  return dx;
}

void matmul_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, Tensor& dbias, bool accumulate) {
  const int64_t N = dw.size(0), K = dw.size(1);
  const int64_t M = leading_rows(dy.shape());
  RL_CHECK(!dbias.defined() || dbias.dtype() == DType::Float32 || dbias.dtype() == DType::BFloat16, Type,
           "matmul_backward_weight: dbias must be float32 or bfloat16, got ", dbias.describe());
  if (N == 0) return;
  OpContext ctx(dy);
  if (M == 0) {  // no rows: the gradients are zero
    if (!accumulate) {
      if (K > 0) CUDA_CHECK(cudaMemsetAsync(dw.data(), 0, dw.nbytes(), ctx.stream));
      if (dbias.defined()) CUDA_CHECK(cudaMemsetAsync(dbias.data(), 0, dbias.nbytes(), ctx.stream));
    }
    return;
  }
  if (K > 0) {
    const GemmSpec s = spec(ctx.device, false, true, K, N, M, K, N, K, dy.dtype(), dw.dtype(), false, x.data(),
                            dy.data(), dw.data());
    gemm(s, x.data(), dy.data(), dw.data(), dw.data(), accumulate ? 1.0f : 0.0f, nullptr, ctx.stream);
  }
  if (dbias.defined()) {
    const int64_t chunks = ceil_div(M, kDbiasRows);
    Tensor partial = Tensor::empty({chunks, N}, DType::Float32, dy.device());
    const dim3 grid(unsigned(ceil_div(N, 32)), unsigned(chunks)), block(32, 8);
    RL_DISPATCH_FLOAT(dy.dtype(), T, {
      column_sums_kernel<T><<<grid, block, 0, ctx.stream>>>(dy.data_as<T>(), partial.data_as<float>(), M, N);
    });
    CUDA_CHECK_LAUNCH();
    norm::reduce_partials(partial, int(chunks), 1, N, dbias, nullptr, ctx.stream, accumulate);
  }
}

}  // namespace ringloom::cuda
