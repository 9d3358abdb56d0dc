// CPU modified Gram-Schmidt; the algorithm is in ops/orthonormalize.h. Every sum runs
// over the rows in order, in float64.
#include <cmath>

#include "ops/orthonormalize.h"

namespace ringloom::cpu {

void orthonormalize_columns_(Tensor& p) {
  const int64_t rows = p.size(0), r = p.size(1);
  float* a = p.data_as<float>();
  auto dot = [&](int64_t i, int64_t j) {
    double s = 0.0;
    for (int64_t row = 0; row < rows; ++row) s += double(a[row * r + i]) * double(a[row * r + j]);
    return s;
  };
  for (int64_t j = 0; j < r; ++j) {
    for (int64_t i = 0; i < j; ++i) {
      const double d = dot(i, j);
      for (int64_t row = 0; row < rows; ++row) a[row * r + j] = float(double(a[row * r + j]) - d * double(a[row * r + i]));
    }
    const double nrm = std::sqrt(dot(j, j));
    if (nrm > 0.0)
      for (int64_t row = 0; row < rows; ++row) a[row * r + j] = float(double(a[row * r + j]) / nrm);
  }
}

}  // namespace ringloom::cpu
