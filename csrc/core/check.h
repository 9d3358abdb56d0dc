// Input validation shared by every op entry point. Each check throws ringloom::Error whose
// message starts with the op name and describes the offending tensor.
#pragma once
#include <initializer_list>
#include <utility>

#include "core/tensor.h"

namespace ringloom {

void check_defined(const char* op, const char* name, const Tensor& t);
void check_dtype(const char* op, const char* name, const Tensor& t, DType want);
void check_dtype_in(const char* op, const char* name, const Tensor& t, std::initializer_list<DType> allowed);
void check_dim(const char* op, const char* name, const Tensor& t, int64_t dim);
void check_shape(const char* op, const char* name, const Tensor& t, const Shape& want);
// All tensors on the same device and, if same_dtype, of the same dtype.
void check_same(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> ts, bool same_dtype);
// `t` may be written: refuses a tensor borrowing read-only memory (Storage::read_only).
void check_writable(const char* op, const char* name, const Tensor& t);
// CPU kernels are fp32: refuse anything else with a message that says so.
void check_cpu_float32(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> ts);

}  // namespace ringloom
