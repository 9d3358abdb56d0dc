#include "ops/cpu/threads.h"

#include <cblas.h>

#include <algorithm>
#include <thread>

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

int max_threads() {
  const int cores = std::max(1, int(std::thread::hardware_concurrency()));
  return std::max(kMinThreadLimit, kThreadsPerCore * cores);
}

void set_num_threads(int n) {
  RL_CHECK(n >= 1, Value, "set_num_threads: n must be at least 1, got ", n);
  // libgomp ends the process when it cannot create the threads asked for, so a count no
  // machine can serve is refused here, while that is still an exception.
  RL_CHECK(n <= max_threads(), Value, "set_num_threads: n=", n, " exceeds the limit of ", max_threads(),
           " threads (", kThreadsPerCore, " per core of the ", std::thread::hardware_concurrency(),
           " this machine has, at least ", kMinThreadLimit, ")");
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
  scipy_openblas_set_num_threads(n);
}

}  // namespace ringloom::cpu
