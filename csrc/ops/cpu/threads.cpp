#include "ops/cpu/threads.h"

#include <cblas.h>

#include "core/error.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ringloom::cpu {

int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void set_num_threads(int n) {
  RL_CHECK(n >= 1, Value, "set_num_threads: n must be at least 1, got ", n);
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
  scipy_openblas_set_num_threads(n);
}

}  // namespace ringloom::cpu
