// The extension module ringloom._C. Python users import ringloom, which re-exports it.
#include <algorithm>
#include <utility>
#include <vector>

#include "bindings/registry.h"
#include "core/error.h"

namespace py = pybind11;

namespace ringloom::bindings {

static std::vector<std::pair<int, BindFn>>& registry() {
  static std::vector<std::pair<int, BindFn>> r;
  return r;
}

Registrar::Registrar(int order, BindFn fn) { registry().emplace_back(order, fn); }

void bind_all(py::module_& root) {
  auto& r = registry();
  std::stable_sort(r.begin(), r.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [order, fn] : r) fn(root);
}

}  // namespace ringloom::bindings

PYBIND11_MODULE(_C, m) {
  m.doc() = "ringloom's compiled core";
  // ringloom::Error -> the Python exception of its kind, same message.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ringloom::Error& e) {
      PyObject* type = PyExc_RuntimeError;
      switch (e.kind()) {
        case ringloom::ErrorKind::Value: type = PyExc_ValueError; break;
        case ringloom::ErrorKind::Type: type = PyExc_TypeError; break;
        case ringloom::ErrorKind::Index: type = PyExc_IndexError; break;
        case ringloom::ErrorKind::Timeout: type = PyExc_TimeoutError; break;
        case ringloom::ErrorKind::NotImplemented: type = PyExc_NotImplementedError; break;
        case ringloom::ErrorKind::Runtime: type = PyExc_RuntimeError; break;
      }
      PyErr_SetString(type, e.what());
    }
  });
  m.def_submodule("ops", "Forward/backward ops (CPU fp32; CUDA bf16/fp32)");
  m.def_submodule("layers", "Layers with explicit forward/backward");
  m.def_submodule("comm", "Rendezvous store, process groups and collectives");
  ringloom::bindings::bind_all(m);
}
