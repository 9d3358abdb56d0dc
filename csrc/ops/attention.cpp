#include "ops/attention.h"

#include <cmath>

#include "core/size.h"
#include "ops/dispatch.h"

namespace ringloom {

namespace {
void check_qkv(const char* op, const Tensor& qkv, int64_t n_head, int64_t n_kv_head, float scale) {
  RL_CHECK(std::isfinite(scale), Value, op, ": scale must be finite (<= 0: 1/sqrt(head dim)), got ", scale);
  check_dtype_in(op, "qkv", qkv, {DType::Float32, DType::BFloat16});
  check_dim(op, "qkv", qkv, 4);
  RL_CHECK(n_head > 0 && n_kv_head > 0 && n_head % n_kv_head == 0, Value, op, ": n_head (", n_head,
           ") must be a positive multiple of n_kv_head (", n_kv_head, ")");
  const int64_t heads = checked_add(n_head, checked_mul(2, n_kv_head, op), op);
  RL_CHECK(qkv.size(2) == heads, Value, op, ": qkv (", qkv.describe(), ") must have n_head + 2*n_kv_head = ", heads,
           " heads in dim 2");
  RL_CHECK(qkv.size(3) > 0, Value, op, ": head dim must be positive, got ", qkv.describe());
  if (qkv.is_cpu()) check_cpu_float32(op, {{"qkv", &qkv}});
}
}  // namespace

std::pair<Tensor, Tensor> attention_forward(const Tensor& qkv, int64_t n_head, int64_t n_kv_head, bool causal,
                                            float scale) {
  check_qkv("attention_forward", qkv, n_head, n_kv_head, scale);
  return RL_DISPATCH(qkv, attention_forward(qkv, n_head, n_kv_head, causal, scale));
}

Tensor attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                          int64_t n_head, int64_t n_kv_head, bool causal, float scale, bool deterministic) {
  const char* op = "attention_backward";
  check_qkv(op, qkv, n_head, n_kv_head, scale);
  const Shape out_shape = {qkv.size(0), qkv.size(1), n_head, qkv.size(3)};
  check_same(op, {{"qkv", &qkv}, {"dout", &dout}, {"out", &out}}, true);
  check_shape(op, "dout", dout, out_shape);
  check_shape(op, "out", out, out_shape);
  check_dtype(op, "lse", lse, DType::Float32);
  check_shape(op, "lse", lse, {qkv.size(0), n_head, qkv.size(1)});
  check_same(op, {{"qkv", &qkv}, {"lse", &lse}}, false);
  return RL_DISPATCH(qkv, attention_backward(dout, qkv, out, lse, n_head, n_kv_head, causal, scale, deterministic));
}

}  // namespace ringloom
