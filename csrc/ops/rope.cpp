#include "ops/rope.h"

#include <cmath>

#include "ops/dispatch.h"

namespace ringloom {

namespace {
void check_rope(const char* op, const Tensor& x, int64_t n_rot_heads, float base, int64_t pos_offset) {
  check_dtype_in(op, "x", x, {DType::Float32, DType::BFloat16});
  check_dim(op, "x", x, 4);
  RL_CHECK(x.size(3) % 2 == 0, Value, op, ": head dim must be even, got ", x.describe());
  RL_CHECK(n_rot_heads >= 0 && n_rot_heads <= x.size(2), Value, op, ": n_rot_heads ", n_rot_heads,
           " out of range for ", x.describe());
  RL_CHECK(std::isfinite(base) && base > 0, Value, op, ": base must be finite and positive, got ", base);
  RL_CHECK(pos_offset >= 0, Value, op, ": pos_offset must be >= 0, got ", pos_offset);
  if (x.is_cpu()) check_cpu_float32(op, {{"x", &x}});
}
}  // namespace

void rope_forward(Tensor& x, int64_t n_rot_heads, float base, int64_t pos_offset) {
  check_rope("rope_forward", x, n_rot_heads, base, pos_offset);
  check_writable("rope_forward", "x", x);
  RL_DISPATCH(x, rope_apply(x, n_rot_heads, base, pos_offset, false));
}

void rope_backward(Tensor& dx, int64_t n_rot_heads, float base, int64_t pos_offset) {
  check_rope("rope_backward", dx, n_rot_heads, base, pos_offset);
  check_writable("rope_backward", "dx", dx);
  RL_DISPATCH(dx, rope_apply(dx, n_rot_heads, base, pos_offset, true));
}

}  // namespace ringloom
