// Element types. Storage is what the tensor holds; compute on CPU is fp32, on GPU bf16
// storage with fp32 accumulation.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace ringloom {

enum class DType : uint8_t { Float32 = 0, BFloat16 = 1, Int32 = 2, Int64 = 3, UInt8 = 4, Float16 = 5 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::Float32: return 4;
    case DType::BFloat16: return 2;
    case DType::Int32: return 4;
    case DType::Int64: return 8;
    case DType::UInt8: return 1;
    case DType::Float16: return 2;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::BFloat16: return "bfloat16";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::UInt8: return "uint8";
    case DType::Float16: return "float16";
  }
  return "?";
}

inline bool is_floating(DType t) {
  return t == DType::Float32 || t == DType::BFloat16 || t == DType::Float16;
}

// bfloat16 <-> float32 on the host: bf16 is the top 16 bits of an fp32; rounding to
// nearest even adds 0x7FFF plus the lowest kept bit before truncating. NaN stays NaN.
inline uint16_t float_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) return uint16_t((u >> 16) | 0x40);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float bf16_bits_to_float(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace ringloom
