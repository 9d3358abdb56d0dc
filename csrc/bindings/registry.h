// Binding registry: each csrc/bindings/*.cpp registers a function that adds its names to
// the module, so areas can be added without editing a central list.
#pragma once
#include <pybind11/pybind11.h>

namespace ringloom::bindings {

using BindFn = void (*)(pybind11::module_& root);
struct Registrar {
  Registrar(int order, BindFn fn);
};
void bind_all(pybind11::module_& root);

}  // namespace ringloom::bindings

// RINGLOOM_BIND(name, order) { ... uses `m` (the root _C module) ... }; lower order binds first.
#define RINGLOOM_BIND(name, order)                                                          \
  static void ringloom_bind_##name(pybind11::module_& m);                                  \
  static ::ringloom::bindings::Registrar ringloom_registrar_##name(order, ringloom_bind_##name); \
  static void ringloom_bind_##name(pybind11::module_& m)
