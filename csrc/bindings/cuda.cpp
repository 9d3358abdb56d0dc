// ringloom._C.cuda_*: allocator statistics and cache control (no-ops without CUDA), pinned
// host tensors (plain host memory without CUDA), and
// CudaGraph (capture/replay of the compute stream: core/cuda/graph.h), bound in every build
// so the module's names are the same; without CUDA its constructor raises.
#include <pybind11/stl.h>

#include <memory>
#include <vector>

#include "bindings/convert.h"
#include "bindings/registry.h"
#include "core/error.h"
#include "core/transfer_stats.h"
#include "core/tensor.h"
#ifdef RINGLOOM_WITH_CUDA
#include "core/cuda/allocator.h"
#include "core/cuda/graph.h"
#endif

namespace py = pybind11;

namespace {
// Holds a cuda::Graph; in a CPU-only build it cannot be made.
class PyCudaGraph {
 public:
  explicit PyCudaGraph(int device) {
#ifdef RINGLOOM_WITH_CUDA
    g_ = std::make_unique<ringloom::cuda::Graph>(device);
#else
    ringloom::fail(ringloom::ErrorKind::Runtime, "CudaGraph: this build has no CUDA backend");
#endif
  }
#ifdef RINGLOOM_WITH_CUDA
  ringloom::cuda::Graph& g() { return *g_; }
#else
  struct NoGraph {
    void begin_capture() {}
    void end_capture() {}
    void abort_capture() {}
    void replay() {}
    bool capturing() const { return false; }
    bool ready() const { return false; }
    int device() const { return -1; }
    size_t num_nodes() const { return 0; }
  } none_;
  NoGraph& g() { return none_; }
#endif

 private:
#ifdef RINGLOOM_WITH_CUDA
  std::unique_ptr<ringloom::cuda::Graph> g_;
#endif
};
}  // namespace

RINGLOOM_BIND(cuda, 5) {
  m.def("cuda_memory_stats", [](int device) {
    py::dict d;
#ifdef RINGLOOM_WITH_CUDA
    auto s = ringloom::cuda::allocator_stats(device);
    d["allocated_bytes"] = s.allocated_bytes;
    d["reserved_bytes"] = s.reserved_bytes;
    d["peak_allocated_bytes"] = s.peak_allocated_bytes;
    d["num_cuda_mallocs"] = s.num_cuda_mallocs;
    d["private_pool_bytes"] = s.private_pool_bytes;
#else
    ringloom::fail(ringloom::ErrorKind::Runtime, "cuda_memory_stats: this build has no CUDA backend");
#endif
    return d;
  }, py::arg("device") = 0, "Caching-allocator statistics for a CUDA device");
  m.def("host_transfer_stats", [] {
    const ringloom::HostTransferStats s = ringloom::host_transfer_stats();
    py::dict d;
    d["to_host_bytes"] = s.to_host_bytes;
    d["to_host_copies"] = s.to_host_copies;
    d["from_host_bytes"] = s.from_host_bytes;
    d["from_host_copies"] = s.from_host_copies;
    return d;
  }, "Bytes and copies Tensor copies moved between host memory and a device in this process "
     "(device->host: to_host_*, host->device: from_host_*) since the start or the last reset");
  m.def("reset_host_transfer_stats", &ringloom::reset_host_transfer_stats);
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

  m.def(
      "pinned_empty",
      [](const std::vector<int64_t>& shape, py::object dtype) {
        const ringloom::DType dt = ringloom::bindings::dtype_from_py(dtype);
        for (int64_t d : shape) RL_CHECK(d >= 0, Value, "pinned_empty: negative dimension in shape ", ringloom::shape_str(shape));
#ifdef RINGLOOM_WITH_CUDA
        // Page-locking needs a driver and a device; without one (a CUDA build on a machine
        // with no GPU) there is nothing to copy from anyway, so plain host memory serves.
        if (ringloom::cuda_available()) {
          const size_t nbytes = size_t(ringloom::shape_numel(shape)) * ringloom::dtype_size(dt);
          void* p = ringloom::cuda::pinned_host_alloc(nbytes);
          std::shared_ptr<void> owner(p, [](void* q) { ringloom::cuda::pinned_host_free(q); });
          return ringloom::Tensor::wrap(p, shape, dt, ringloom::Device::cpu(), owner);
        }
#endif
        return ringloom::Tensor::empty(shape, dt);
      },
      py::arg("shape"), py::arg("dtype") = "float32",
      "An uninitialised CPU tensor in page-locked memory (device copies into it run at full PCIe "
      "speed); plain host memory where no CUDA device is visible or the build has no CUDA");

  py::class_<PyCudaGraph>(m, "CudaGraph",
                          "A CUDA Graph of the work issued on a device's compute stream between capture_begin "
                          "and capture_end; replay() launches it again (same kernels, arguments, addresses)")
      .def(py::init<int>(), py::arg("device") = 0)
      .def("capture_begin", [](PyCudaGraph& self) { self.g().begin_capture(); },
           "Start recording the compute stream; allocations come from this graph's private pool, from the "
           "cache only (no cudaMalloc)")
      .def("capture_end", [](PyCudaGraph& self) { self.g().end_capture(); }, "Stop recording and instantiate")
      .def("capture_abort", [](PyCudaGraph& self) { self.g().abort_capture(); },
           "Discard a capture after an error (no-op when not capturing)")
      .def("replay", [](PyCudaGraph& self) { self.g().replay(); }, "Launch the graph on the compute stream")
      .def_property_readonly("capturing", [](PyCudaGraph& self) { return self.g().capturing(); })
      .def_property_readonly("ready", [](PyCudaGraph& self) { return self.g().ready(); })
      .def_property_readonly("device", [](PyCudaGraph& self) { return self.g().device(); })
      .def_property_readonly("num_nodes", [](PyCudaGraph& self) { return self.g().num_nodes(); });
}
