// CPU QSGD encode and decode-sum: the math is in ops/qsgd.h and ops/qsgd_math.h.
// The norm loop emulates the CUDA kernel's warp reduction (32 strided float64 partial sums,
// then the xor butterfly), so both devices send the same norms. Codes are written a byte
// at a time, as on the GPU: each byte recomputes the codes it holds (a code straddling two
// bytes is drawn twice, from the same counter, so identically), which lets OpenMP split
// the bytes without two threads writing one byte.
#include <algorithm>

#include "ops/qsgd.h"
#include "ops/qsgd_math.h"

namespace ringloom::cpu {

namespace {
// Sum of squares of v[0 .. d) in the documented order: lane t adds v_t^2, v_{t+32}^2, ...;
// then lanes t and t + o (o = 16, 8, 4, 2, 1) are added into lane t, the values a warp's
// shfl_xor reduction leaves in lane 0 (lane t + o holds the same sum as lane t).
double bucket_sumsq(const float* v, int64_t d) {
  double lane[qsgd::kLanes];
  for (int t = 0; t < qsgd::kLanes; ++t) {
    double acc = 0.0;
    for (int64_t j = t; j < d; j += qsgd::kLanes) acc += double(v[j]) * double(v[j]);
    lane[t] = acc;
  }
  for (int o = qsgd::kLanes / 2; o > 0; o >>= 1)
    for (int t = 0; t < o; ++t) lane[t] = lane[t] + lane[t + o];
  return lane[0];
}
}  // namespace

void qsgd_encode(const float* g, int64_t n, int64_t levels, int64_t bucket, int64_t bits, uint64_t stream,
                 const Tensor& payload) {
  const int64_t nb = n / bucket + (n % bucket != 0);
  uint8_t* out = payload.data_as<uint8_t>();
  float* norms = reinterpret_cast<float*>(out);  // a fresh allocation: 4-byte aligned
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t start = b * bucket, d = std::min(bucket, n - start);
    norms[b] = qsgd::norm_of(bucket_sumsq(g + start, d));
  }
  uint8_t* codes = out + 4 * nb;
  const int64_t nbytes = payload.numel() - 4 * nb;
  auto code = [&](int64_t e) {
    return qsgd::code_of(g[e], norms[e / bucket], levels, qsgd::uniform(stream, e));
  };
#pragma omp parallel for schedule(static) if (nbytes > 16384)
  for (int64_t j = 0; j < nbytes; ++j) codes[j] = qsgd::packed_byte(j, n, bits, code);
}

void qsgd_decode_sum(const Tensor& out, const Tensor& gathered, int64_t world, int64_t n, int64_t levels,
                     int64_t bucket, int64_t bits) {
  const int64_t nb = n / bucket + (n % bucket != 0);
  const int64_t size = gathered.numel() / world, nbytes = size - 4 * nb;
  const uint8_t* in = gathered.data_as<uint8_t>();
  float* o = out.data_as<float>();
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    float acc = 0.0f;
    for (int64_t r = 0; r < world; ++r) {
      const uint8_t* p = in + r * size;
      const float norm = qsgd::load_norm(p + 4 * (i / bucket));
      acc += qsgd::decode(qsgd::unpack_code(p + 4 * nb, nbytes, i, bits), norm, levels);
    }
    o[i] = qsgd::canonical(acc);
  }
}

}  // namespace ringloom::cpu
