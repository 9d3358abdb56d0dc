#include "comm/reduce.h"

#include <algorithm>
#include <cstdint>

#include "core/error.h"

namespace ringloom::comm {

ReduceOp parse_reduce_op(const std::string& name) {
  if (name == "sum") return ReduceOp::Sum;
  if (name == "avg" || name == "mean") return ReduceOp::Avg;
  if (name == "max") return ReduceOp::Max;
  fail(ErrorKind::Value, "ringloom.distributed: unknown reduce op '", name, "' (expected sum, avg or max)");
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Max: return "max";
  }
  return "?";
}

namespace {

// Sum through the unsigned type of the same width: wraps like the hardware, no UB.
template <typename T, typename U>
void sum_wrap(T* d, const T* s, size_t n) {
  for (size_t i = 0; i < n; ++i) d[i] = T(U(d[i]) + U(s[i]));
}

template <typename T>
void max_into(T* d, const T* s, size_t n) {
  for (size_t i = 0; i < n; ++i) d[i] = std::max(d[i], s[i]);
}

void max_f32(float* d, const float* s, size_t n) {
  // NaN wins (as in torch): a NaN anywhere shows up in the result instead of vanishing.
  for (size_t i = 0; i < n; ++i) d[i] = (d[i] != d[i] || s[i] != s[i]) ? d[i] + s[i] : std::max(d[i], s[i]);
}

}  // namespace

void reduce_into(void* dst, const void* src, size_t n, DType dtype, ReduceOp op) {
  const bool max = op == ReduceOp::Max;
  switch (dtype) {
    case DType::Float32: {
      float* d = static_cast<float*>(dst);
      const float* s = static_cast<const float*>(src);
      if (max) max_f32(d, s, n);
      else for (size_t i = 0; i < n; ++i) d[i] += s[i];
      return;
    }
    case DType::Int32:
      if (max) max_into(static_cast<int32_t*>(dst), static_cast<const int32_t*>(src), n);
      else sum_wrap<int32_t, uint32_t>(static_cast<int32_t*>(dst), static_cast<const int32_t*>(src), n);
      return;
    case DType::Int64:
      if (max) max_into(static_cast<int64_t*>(dst), static_cast<const int64_t*>(src), n);
      else sum_wrap<int64_t, uint64_t>(static_cast<int64_t*>(dst), static_cast<const int64_t*>(src), n);
      return;
    case DType::UInt8:
      if (max) max_into(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), n);
      else sum_wrap<uint8_t, uint8_t>(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), n);
      return;
    default:
      fail(ErrorKind::Type, "ringloom.distributed: no wire reduction for ", dtype_name(dtype));
  }
}

void scale_f32(float* x, size_t n, float inv_n) {
  for (size_t i = 0; i < n; ++i) x[i] *= inv_n;
}

void bf16_to_f32(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_float(src[i]);
}

void f32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = float_to_bf16_bits(src[i]);
}

}  // namespace ringloom::comm
