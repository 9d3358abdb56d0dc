#include "ops/topk.h"

#include <limits>

#include "core/size.h"
#include "ops/dispatch.h"

namespace ringloom {

namespace {
void check_vector(const char* op, const char* name, const Tensor& t) {
  check_defined(op, name, t);
  check_dtype(op, name, t, DType::Float32);
  check_dim(op, name, t, 1);
}
}  // namespace

Tensor topk_compress(Tensor& acc, int64_t k) {
  const char* op = "topk_compress";
  check_vector(op, "acc", acc);
  check_writable(op, "acc", acc);
  const int64_t n = acc.numel();
  RL_CHECK(n <= std::numeric_limits<int32_t>::max(), Value, op, ": acc has ", n,
           " elements; indices travel as int32, so at most 2^31 - 1");
  RL_CHECK(k >= 1 && k <= n, Value, op, ": k must be in [1, n] = [1, ", n, "], got k=", k);
  Tensor payload = Tensor::empty({checked_mul(2, k, op)}, DType::Float32, acc.device());
  RL_DISPATCH(acc, topk_compress(acc, k, payload));
  return payload;
}

void topk_accumulate(Tensor& out, const Tensor& gathered, int64_t world, int64_t k) {
  const char* op = "topk_accumulate";
  check_vector(op, "out", out);
  check_vector(op, "gathered", gathered);
  check_writable(op, "out", out);
  check_same(op, {{"out", &out}, {"gathered", &gathered}}, true);
  RL_CHECK(out.numel() <= std::numeric_limits<int32_t>::max(), Value, op, ": out has ", out.numel(),
           " elements; indices travel as int32, so at most 2^31 - 1");
  RL_CHECK(world >= 1, Value, op, ": world must be >= 1, got ", world);
  RL_CHECK(k >= 1, Value, op, ": k must be >= 1, got ", k);
  const int64_t want = checked_mul(world, checked_mul(2, k, op), op);
  RL_CHECK(gathered.numel() == want, Value, op, ": gathered (", gathered.describe(), ") must hold world * 2k = ",
           world, " * 2 * ", k, " = ", want, " values");
  RL_DISPATCH(out, topk_accumulate(out, gathered, world, k));
}

}  // namespace ringloom
