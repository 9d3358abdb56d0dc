// Conversions shared by the binding files: dtype/device arguments given as strings,
// NumPy dtypes or enums.
#pragma once
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "core/tensor.h"

namespace ringloom::bindings {

DType dtype_from_py(const pybind11::handle& obj);      // DType, "float32", np.float32, np.dtype(...)
Device device_from_py(const pybind11::handle& obj);    // "cpu", "cuda:1", Device
Tensor tensor_from_numpy(const pybind11::handle& arr);  // zero-copy; C-contiguous arrays only

}  // namespace ringloom::bindings
