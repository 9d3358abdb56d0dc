#include "core/check.h"

namespace ringloom {

void check_defined(const char* op, const char* name, const Tensor& t) {
  RL_CHECK(t.defined(), Value, op, ": ", name, " is an undefined tensor");
}

void check_dtype(const char* op, const char* name, const Tensor& t, DType want) {
  check_defined(op, name, t);
  RL_CHECK(t.dtype() == want, Type, op, ": ", name, " must be ", dtype_name(want), ", got ", t.describe());
}

void check_dtype_in(const char* op, const char* name, const Tensor& t, std::initializer_list<DType> allowed) {
  check_defined(op, name, t);
  std::string names;
  for (DType d : allowed) {
    if (t.dtype() == d) return;
    names += (names.empty() ? "" : " or ") + std::string(dtype_name(d));
  }
  fail(ErrorKind::Type, op, ": ", name, " must be ", names, ", got ", t.describe());
}

void check_dim(const char* op, const char* name, const Tensor& t, int64_t dim) {
  check_defined(op, name, t);
  RL_CHECK(t.dim() == dim, Value, op, ": ", name, " must have ", dim, " dimensions, got ", t.describe());
}

void check_shape(const char* op, const char* name, const Tensor& t, const Shape& want) {
  check_defined(op, name, t);
  RL_CHECK(t.shape() == want, Value, op, ": ", name, " must have shape ", shape_str(want), ", got ",
           t.describe());
}

void check_same(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> ts, bool same_dtype) {
  const std::pair<const char*, const Tensor*>* first = nullptr;
  for (const auto& p : ts) {
    check_defined(op, p.first, *p.second);
    if (!first) {
      first = &p;
      continue;
    }
    RL_CHECK(p.second->device() == first->second->device(), Value, op, ": ", p.first, " (",
             p.second->describe(), ") and ", first->first, " (", first->second->describe(),
             ") are on different devices");
    if (same_dtype)
      RL_CHECK(p.second->dtype() == first->second->dtype(), Type, op, ": ", p.first, " (",
               p.second->describe(), ") and ", first->first, " (", first->second->describe(),
               ") have different dtypes");
  }
}

void check_writable(const char* op, const char* name, const Tensor& t) {
  RL_CHECK(!t.read_only(), Value, op, ": ", name, " (", t.describe(),
           ") is a view of read-only memory (a NumPy array with writeable=False, a read-only memmap or bytes); "
           "copy it first (np.array(a) or ringloom.tensor(a))");
}

void check_cpu_float32(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
  for (const auto& p : ts)
    RL_CHECK(p.second->dtype() == DType::Float32, Type, op, ": the CPU implementation takes float32; ", p.first,
             " is ", p.second->describe());
}

}  // namespace ringloom
