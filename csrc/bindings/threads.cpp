// ringloom._C.set_num_threads / get_num_threads: the CPU ops' thread count (ops/cpu/threads.h).
#include "bindings/registry.h"
#include "ops/cpu/threads.h"

RINGLOOM_BIND(threads, 50) {
  m.def("get_num_threads", &ringloom::cpu::num_threads,
        "Threads the CPU ops use (OpenMP loops and OpenBLAS GEMMs).");
  m.def("set_num_threads", &ringloom::cpu::set_num_threads, pybind11::arg("n"),
        "Set the threads of the CPU ops: OpenMP (for the calling thread) and OpenBLAS "
        "(process-wide) together. 1 <= n <= max(64, 4 x the hardware threads); anything else raises ValueError.");
}
