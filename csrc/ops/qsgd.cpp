#include "ops/qsgd.h"

#include "core/size.h"
#include "ops/dispatch.h"
#include "ops/qsgd_math.h"

namespace ringloom {

namespace {
constexpr int64_t kMaxLevels = 32767;  // codes up to 2s = 65534 fit 16 bits

// The fewest whole bits that hold the 2 levels + 1 codes.
int64_t min_bits(int64_t levels) {
  int64_t b = 1;
  while ((int64_t(1) << b) < 2 * levels + 1) ++b;
  return b;
}

void check_format(const char* op, int64_t levels, int64_t bucket, int64_t bits) {
  RL_CHECK(levels >= 1 && levels <= kMaxLevels, Value, op, ": levels must be in [1, ", kMaxLevels, "], got ",
           levels);
  RL_CHECK(bucket >= 1, Value, op, ": bucket must be positive, got ", bucket);
  RL_CHECK(bits >= min_bits(levels) && bits <= 16, Value, op, ": bits must be in [", min_bits(levels),
           ", 16] for levels=", levels, " (2 levels + 1 codes), got ", bits);
}
}  // namespace

int64_t qsgd_payload_bytes(int64_t n, int64_t bucket, int64_t bits) {
  const char* what = "qsgd payload";
  RL_CHECK(n >= 0 && bucket >= 1 && bits >= 1, Value, what, ": needs n >= 0, bucket >= 1, bits >= 1, got n=", n,
           " bucket=", bucket, " bits=", bits);
  const int64_t nb = n / bucket + (n % bucket != 0);
  const int64_t code_bits = checked_mul(n, bits, what);
  return checked_add(checked_mul(4, nb, what), code_bits / 8 + (code_bits % 8 != 0), what);
}

Tensor qsgd_encode(const Tensor& g, int64_t levels, int64_t bucket, int64_t bits, int64_t seed, int64_t step,
                   int64_t key, int64_t rank) {
  const char* op = "qsgd_encode";
  check_defined(op, "g", g);
  check_dtype(op, "g", g, DType::Float32);
  check_format(op, levels, bucket, bits);
  RL_CHECK(seed >= 0 && step >= 0 && key >= 0 && rank >= 0, Value, op,
           ": seed, step, key and rank must be >= 0, got seed=", seed, " step=", step, " key=", key, " rank=", rank);
  const int64_t n = g.numel();
  Tensor payload = Tensor::empty({qsgd_payload_bytes(n, bucket, bits)}, DType::UInt8, g.device());
  if (n == 0) return payload;
  const uint64_t stream = qsgd::stream_of(uint64_t(seed), uint64_t(step), uint64_t(key), uint64_t(rank));
  RL_DISPATCH(g, qsgd_encode(g.data_as<float>(), n, levels, bucket, bits, stream, payload));
  return payload;
}

void qsgd_decode_sum(const Tensor& out, const Tensor& gathered, int64_t world, int64_t n, int64_t levels,
                     int64_t bucket, int64_t bits) {
  const char* op = "qsgd_decode_sum";
  check_defined(op, "out", out);
  check_defined(op, "gathered", gathered);
  check_dtype(op, "out", out, DType::Float32);
  check_dtype(op, "gathered", gathered, DType::UInt8);
  check_writable(op, "out", out);
  check_same(op, {{"out", &out}, {"gathered", &gathered}}, false);
  check_format(op, levels, bucket, bits);
  RL_CHECK(world >= 1, Value, op, ": world must be >= 1, got ", world);
  RL_CHECK(n >= 0 && out.numel() == n, Value, op, ": out must have n=", n, " elements, got ", out.describe());
  const int64_t want = checked_mul(world, qsgd_payload_bytes(n, bucket, bits), op);
  RL_CHECK(gathered.numel() == want, Value, op, ": gathered must hold world=", world, " payloads of ", n,
           " elements (", want, " bytes), got ", gathered.describe());
  if (n == 0) return;
  RL_DISPATCH(out, qsgd_decode_sum(out, gathered, world, n, levels, bucket, bits));
}

}  // namespace ringloom
