// ringloom._C.cuda_*: allocator statistics and cache control (no-ops without CUDA).
#include "bindings/registry.h"
#include "core/error.h"
#ifdef RINGLOOM_WITH_CUDA
#include "core/cuda/allocator.h"
#endif

namespace py = pybind11;

RINGLOOM_BIND(cuda, 5) {
  m.def("cuda_memory_stats", [](int device) {
    py::dict d;
#ifdef RINGLOOM_WITH_CUDA
    auto s = ringloom::cuda::allocator_stats(device);
    d["allocated_bytes"] = s.allocated_bytes;
    d["reserved_bytes"] = s.reserved_bytes;
    d["peak_allocated_bytes"] = s.peak_allocated_bytes;
    d["num_cuda_mallocs"] = s.num_cuda_mallocs;
#else
    ringloom::fail(ringloom::ErrorKind::Runtime, "cuda_memory_stats: this build has no CUDA backend");
#endif
    return d;
  }, py::arg("device") = 0, "Caching-allocator statistics for a CUDA device");
  m.def("cuda_reset_peak_memory", [](int device) {
#ifdef RINGLOOM_WITH_CUDA
    ringloom::cuda::reset_peak_stats(device);
#endif
  }, py::arg("device") = 0);
  m.def("cuda_empty_cache", [](int device) {
#ifdef RINGLOOM_WITH_CUDA
    ringloom::cuda::empty_cache(device);
#endif
  }, py::arg("device") = 0);
}
