// QSGD stochastic quantisation of fp32 gradients (Alistarh et al. 2017) into the packed
// payload the data-parallel reduction all-gathers, and the rank-order sum of the decoded
// payloads (python/ringloom/parallel/compression.py, QSGDCompression, uses both). The
// scalar math is in ops/qsgd_math.h, one definition for the CPU loops and the CUDA kernels,
// so both devices produce the same bytes and the same sums, bit for bit.
//
// Payload of n elements, s = levels, b = bits, B = bucket, nb = ceil(n / B):
//   bytes [0, 4 nb)        the fp32 norm of each bucket (little-endian), rounded up
//   bytes [4 nb, +ceil(n b / 8))  code_i = sgn(g_i) xi_i + s in [0, 2s], b bits each, code i
//                          at bits [i b, i b + b) of a little-endian bit stream (bit k of
//                          byte j is stream bit 8 j + k); the last byte's spare bits are 0.
//
// Norm of a bucket v of d elements (d <= B; the last bucket may be shorter), in float64:
// 32 strided partial sums, lane t adding v_t^2, v_{t+32}^2, ... in that order from 0.0,
// combined as a warp's xor-butterfly reduction does (offsets 16, 8, 4, 2, 1: lane t adds
// lane t ^ o to its own), then sqrt. The CUDA kernel is that warp reduction; the CPU loop
// emulates it, so the two sums are the same float64 number. A float squared is exact in
// float64, so no fused multiply-add can change a bit. The fp32 norm is sqrt rounded to
// nearest, then moved up one ulp (nextafter towards +inf) when that is below the float64
// norm, so r_i = s |g_i| / norm <= s holds for the norm the receiver multiplies by.
//
// Stochastic rounding: r_i = (s |g_i|) / norm in float64, xi_i = floor(r_i) + [u_i < r_i -
// floor(r_i)], with u_i in [0, 1) from a counter-based generator (ops/qsgd_math.h,
// qsgd_uniform): splitmix64 (Steele, Lea, Flood 2014) keyed by (seed, step, key, rank) and
// indexed by the element's position i in g. Draws are independent between ranks, steps and
// buckets, the same in every run and after a resume, and the same on CPU and GPU.
//
// Non-finite input: a bucket whose norm is not a finite fp32 (a NaN or inf element, or a
// norm past FLT_MAX) is sent as norm NaN with every code s (level 0), and decodes to NaN in
// every element, on every rank: the non-finite gradient reaches the trainer's check
// (--on-nonfinite) instead of turning into silent zeros or a wrong finite value.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace ringloom {

// g: float32 [n] (any shape, read flat). Returns the uint8 payload on g's device.
// levels in [1, 32767], bucket >= 1, bits in [ceil(log2(2 levels + 1)), 16]; seed, step,
// key, rank >= 0 (the generator's key).
Tensor qsgd_encode(const Tensor& g, int64_t levels, int64_t bucket, int64_t bits, int64_t seed, int64_t step,
                   int64_t key, int64_t rank);

// out: float32 [n], overwritten with sum over r = 0 .. world - 1, in that order (fp32 adds
// from 0), of the vector rank r's payload encodes: value_i = float((double(code_i) - s) *
// (double(norm) / s)). gathered: uint8 [world * payload bytes of n], rank r's payload at
// [r P, (r + 1) P), on out's device.
void qsgd_decode_sum(const Tensor& out, const Tensor& gathered, int64_t world, int64_t n, int64_t levels,
                     int64_t bucket, int64_t bits);

// Bytes of the payload of n elements: 4 ceil(n / bucket) + ceil(n bits / 8), overflow checked.
int64_t qsgd_payload_bytes(int64_t n, int64_t bucket, int64_t bits);

namespace cpu {
void qsgd_encode(const float* g, int64_t n, int64_t levels, int64_t bucket, int64_t bits, uint64_t stream,
                 const Tensor& payload);
void qsgd_decode_sum(const Tensor& out, const Tensor& gathered, int64_t world, int64_t n, int64_t levels,
                     int64_t bucket, int64_t bits);
}  // namespace cpu
namespace cuda {
void qsgd_encode(const float* g, int64_t n, int64_t levels, int64_t bucket, int64_t bits, uint64_t stream,
                 const Tensor& payload);
void qsgd_decode_sum(const Tensor& out, const Tensor& gathered, int64_t world, int64_t n, int64_t levels,
                     int64_t bucket, int64_t bits);
}  // namespace cuda

}  // namespace ringloom
