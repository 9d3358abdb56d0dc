// Element-wise reductions on host buffers, the arithmetic of every collective.
// Integer sums wrap modulo 2^bits (done in unsigned arithmetic, so no signed-overflow UB):
// the result equals a sequential sum in the same type, whatever order the ranks add in.
// Floating point: the algorithms reduce in fp32; bfloat16 tensors are widened to an fp32
// work buffer first and rounded once at the end (round to nearest even).
#pragma once
#include <cstddef>
#include <string>

#include "core/dtype.h"

namespace ringloom::comm {

enum class ReduceOp : uint8_t { Sum = 0, Avg = 1, Max = 2 };

ReduceOp parse_reduce_op(const std::string& name);  // "sum" | "avg" | "mean" | "max"
const char* reduce_op_name(ReduceOp op);

// dst[i] = dst[i] (op) src[i] for i < count. Avg reduces like Sum (the caller divides).
// dtype is one of the wire dtypes: float32, int32, int64, uint8.
void reduce_into(void* dst, const void* src, size_t count, DType dtype, ReduceOp op);

// x[i] /= n for the float32 wire buffer of an average.
void scale_f32(float* x, size_t count, float inv_n);

void bf16_to_f32(const uint16_t* src, float* dst, size_t count);
void f32_to_bf16(const float* src, uint16_t* dst, size_t count);

}  // namespace ringloom::comm
