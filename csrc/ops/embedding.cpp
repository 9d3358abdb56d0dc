#include "ops/embedding.h"

#include "ops/dispatch.h"

namespace ringloom {

namespace {
void check_embedding(const char* op, const Tensor& ids, const Tensor& wte, const Tensor& wpe) {
  check_dtype(op, "ids", ids, DType::Int32);
  check_dim(op, "ids", ids, 2);
  check_dim(op, "wte", wte, 2);
  check_dtype_in(op, "wte", wte, {DType::Float32, DType::BFloat16});
  check_same(op, {{"ids", &ids}, {"wte", &wte}}, false);
  if (wpe.defined()) {
    check_same(op, {{"wte", &wte}, {"wpe", &wpe}}, true);
    check_dim(op, "wpe", wpe, 2);
    RL_CHECK(wpe.size(1) == wte.size(1), Value, op, ": wpe (", wpe.describe(), ") and wte (", wte.describe(),
             ") must have the same embedding width");
    RL_CHECK(ids.size(1) <= wpe.size(0), Value, op, ": sequence length ", ids.size(1),
             " exceeds the model's maximum of ", wpe.size(0), " positions");
  }
  if (wte.is_cpu()) {
    check_cpu_float32(op, {{"wte", &wte}});
    // Token ids are checked on the host; the CUDA kernel clamps and reports instead.
    const int32_t* p = ids.data_as<int32_t>();
    const int64_t V = wte.size(0);
    for (int64_t i = 0; i < ids.numel(); ++i)
      RL_CHECK(p[i] >= 0 && p[i] < V, Value, op, ": token id ", p[i], " at position ", i,
               " is outside the vocabulary [0, ", V, ")");
  }
}
}  // namespace

Tensor embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe) {
  check_embedding("embedding_forward", ids, wte, wpe);
  return RL_DISPATCH(wte, embedding_forward(ids, wte, wpe));
}

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe) {
  const char* op = "embedding_backward";
  check_embedding(op, ids, dwte, dwpe);
  check_same(op, {{"dout", &dout}, {"dwte", &dwte}}, false);
  check_writable(op, "dwte", dwte);
  if (dwpe.defined()) check_writable(op, "dwpe", dwpe);
  check_shape(op, "dout", dout, {ids.size(0), ids.size(1), dwte.size(1)});
  if (dout.is_cpu()) check_cpu_float32(op, {{"dout", &dout}});
  RL_DISPATCH(dwte, embedding_backward(ids, dout, dwte, dwpe));
}

}  // namespace ringloom
