// Tensor, dtype and device for Python: NumPy exchange (buffer protocol and __array__,
// zero-copy on the CPU) and DLPack (__dlpack__/__dlpack_device__, from_dlpack).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>

#include "bindings/convert.h"
#include "bindings/registry.h"
#include "core/backend.h"
#include "core/dlpack.h"

namespace py = pybind11;

namespace ringloom::bindings {

namespace {

const char* numpy_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::UInt8: return "uint8";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "uint16";  // viewed as ml_dtypes.bfloat16 afterwards
  }
  return "?";
}

// A Python reference held from C++ whose last release may happen on any thread.
std::shared_ptr<void> hold_python(py::object obj) {
  return std::shared_ptr<void>(new py::object(std::move(obj)), [](void* p) {
    if (!Py_IsInitialized()) return;  // interpreter gone: leak rather than crash
    py::gil_scoped_acquire gil;
    delete static_cast<py::object*>(p);
  });
}

py::array numpy_view(const Tensor& t, py::handle base) {
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
  py::array arr(py::dtype(numpy_name(t.dtype())), shape, {}, t.data(), base);
  if (t.read_only()) arr.attr("flags").attr("writeable") = false;
  if (t.dtype() == DType::BFloat16) {
    py::object bf16 = py::module_::import("ml_dtypes").attr("bfloat16");
    return arr.attr("view")(bf16);
  }
  return arr;
}

py::array to_numpy(const Tensor& self, py::object self_obj) {
  if (self.is_cpu()) return numpy_view(self, self_obj);
  Tensor host = self.to(Device::cpu());
  return numpy_view(host, py::cast(host));
}

// DLPack export: the capsule owns a copy of the Tensor handle (keeps storage alive).
struct DLHolder {
  Tensor tensor;
  std::vector<int64_t> shape;
  DLManagedTensor managed;
};

DLDataType dl_dtype(DType t) {
  switch (t) {
    case DType::Float32: return {kDLFloat, 32, 1};
    case DType::BFloat16: return {kDLBfloat, 16, 1};
    case DType::Int32: return {kDLInt, 32, 1};
    case DType::Int64: return {kDLInt, 64, 1};
    case DType::UInt8: return {kDLUInt, 8, 1};
    case DType::Float16: return {kDLFloat, 16, 1};
  }
  return {kDLFloat, 32, 1};
}

DType dtype_from_dl(DLDataType d) {
  RL_CHECK(d.lanes == 1, Type, "from_dlpack: vector dtypes (lanes=", int(d.lanes), ") are not supported");
  if (d.code == kDLFloat && d.bits == 32) return DType::Float32;
  if (d.code == kDLFloat && d.bits == 16) return DType::Float16;
  if (d.code == kDLBfloat && d.bits == 16) return DType::BFloat16;
  if (d.code == kDLInt && d.bits == 32) return DType::Int32;
  if (d.code == kDLInt && d.bits == 64) return DType::Int64;
  if (d.code == kDLUInt && d.bits == 8) return DType::UInt8;
  fail(ErrorKind::Type, "from_dlpack: unsupported dtype (code ", int(d.code), ", bits ", int(d.bits), ")");
}

py::capsule to_dlpack(const Tensor& t) {
  // The unversioned capsule cannot say "read-only": a consumer would write through it.
  if (t.read_only())
    throw py::buffer_error("__dlpack__: " + t.describe() +
                           " views read-only memory, which DLPack 0.x cannot mark; export .clone() instead");
  if (t.is_cuda()) {
    // Our kernels run on the device's streams; make the data complete before a consumer
    // that knows nothing of them reads it.
    backend_for(DeviceType::CUDA)->synchronize(t.device().index);
  }
  auto* h = new DLHolder{t, t.shape(), {}};
  DLTensor& dl = h->managed.dl_tensor;
  dl.data = t.data();
  dl.device = {t.is_cpu() ? kDLCPU : kDLCUDA, t.is_cpu() ? 0 : t.device().index};
  dl.ndim = int32_t(t.dim());
  dl.dtype = dl_dtype(t.dtype());
  dl.shape = h->shape.data();
  dl.strides = nullptr;
  dl.byte_offset = 0;
  h->managed.manager_ctx = h;
  h->managed.deleter = [](DLManagedTensor* self) { delete static_cast<DLHolder*>(self->manager_ctx); };
  return py::capsule(&h->managed, "dltensor", [](PyObject* cap) {
    // Only a capsule nobody consumed still carries the name "dltensor"; free it then.
    if (PyCapsule_IsValid(cap, "dltensor")) {
      auto* mt = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
      if (mt && mt->deleter) mt->deleter(mt);
    }
  });
}

// Calls the producer's deleter (under the GIL while Python lives) when the last view goes.
template <typename Managed>
std::shared_ptr<void> dlpack_owner(Managed* mt) {
  return std::shared_ptr<void>(mt, [](void* p) {
    auto* m = static_cast<Managed*>(p);
    if (!m->deleter) return;
    if (Py_IsInitialized()) {
      py::gil_scoped_acquire gil;
      m->deleter(m);
    } else {
      m->deleter(m);
    }
  });
}

// Asks for a versioned capsule (DLPack 1.x carries a read-only flag) and falls back to the
// unversioned protocol for producers that do not take max_version.
py::object dlpack_capsule(py::object obj) {
  if (!py::hasattr(obj, "__dlpack__")) return obj;
  try {
    return obj.attr("__dlpack__")(py::arg("max_version") = py::make_tuple(1, 0));
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;
  }
  return obj.attr("__dlpack__")();
}

Tensor from_dlpack(py::object obj) {
  py::object cap = dlpack_capsule(obj);
  PyObject* c = cap.ptr();
  const DLTensor* dlp = nullptr;
  std::shared_ptr<void> owner;
  bool read_only = false;
  // From here the capsule no longer owns the tensor (the spec's hand-over).
  if (PyCapsule_IsValid(c, "dltensor_versioned")) {
    auto* mt = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(c, "dltensor_versioned"));
    owner = dlpack_owner(mt);
    PyCapsule_SetName(c, "used_dltensor_versioned");
    PyCapsule_SetDestructor(c, nullptr);
    RL_CHECK(mt->version.major == 1, Value, "from_dlpack: DLPack version ", mt->version.major, ".",
             mt->version.minor, " is not supported (1.x is)");
    read_only = (mt->flags & DLPACK_FLAG_BITMASK_READ_ONLY) != 0;
    dlp = &mt->dl_tensor;
  } else {
    RL_CHECK(PyCapsule_IsValid(c, "dltensor"), Type,
             "from_dlpack: expected an object with __dlpack__ or a 'dltensor' capsule, got ",
             std::string(py::str(py::type::of(obj))));
    auto* mt = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(c, "dltensor"));
    owner = dlpack_owner(mt);
    PyCapsule_SetName(c, "used_dltensor");
    PyCapsule_SetDestructor(c, nullptr);
    dlp = &mt->dl_tensor;
  }
  const DLTensor& dl = *dlp;
  RL_CHECK(dl.ndim >= 0 && (dl.ndim == 0 || dl.shape), Value, "from_dlpack: malformed tensor (ndim ", dl.ndim, ")");
  Device dev;
  if (dl.device.device_type == kDLCPU || dl.device.device_type == kDLCUDAHost) dev = Device::cpu();
  else if (dl.device.device_type == kDLCUDA) dev = Device::cuda(dl.device.device_id);
  else fail(ErrorKind::Value, "from_dlpack: unsupported device type ", int(dl.device.device_type));
  DType dtype = dtype_from_dl(dl.dtype);
  Shape shape(dl.shape, dl.shape + dl.ndim);
  const int64_t numel = shape_numel(shape);  // throws on negative dimensions and overflow
  // Strides of dimensions of size 1, and of a tensor with no elements, address nothing.
  if (dl.strides && numel > 0) {
    int64_t expect = 1;
    for (int i = dl.ndim - 1; i >= 0; --i) {
      if (shape[i] != 1)
        RL_CHECK(dl.strides[i] == expect, Value, "from_dlpack: only contiguous row-major tensors are supported "
                 "(shape ", shape_str(shape), "); call .contiguous() on the source first");
      expect *= shape[i];
    }
  }
  RL_CHECK(dev.is_cpu() || backend_for(DeviceType::CUDA), Runtime,
           "from_dlpack: the tensor is on ", dev.str(), " but this build of ringloom has no CUDA backend");
  return Tensor::wrap(static_cast<char*>(dl.data) + dl.byte_offset, shape, dtype, dev, std::move(owner), read_only);
}

}  // namespace

DType dtype_from_py(const py::handle& obj) {
  if (py::isinstance<DType>(obj)) return obj.cast<DType>();
  std::string name;
  if (py::isinstance<py::str>(obj)) name = obj.cast<std::string>();
  else name = py::str(py::module_::import("numpy").attr("dtype")(obj)).cast<std::string>();
  if (name == "float32" || name == "fp32") return DType::Float32;
  if (name == "bfloat16" || name == "bf16") return DType::BFloat16;
  if (name == "int32") return DType::Int32;
  if (name == "int64") return DType::Int64;
  if (name == "uint8") return DType::UInt8;
  if (name == "float16" || name == "fp16") return DType::Float16;
  fail(ErrorKind::Type, "unsupported dtype '", name, "' (ringloom has float32, bfloat16, float16, int32, int64, uint8)");
}

Device device_from_py(const py::handle& obj) {
  if (py::isinstance<py::str>(obj)) return Device::parse(obj.cast<std::string>());
  return Device::parse(py::str(obj).cast<std::string>());
}

Tensor tensor_from_numpy(const py::handle& h) {
  RL_CHECK(py::isinstance<py::array>(h), Type, "from_numpy: expected a numpy.ndarray, got ",
           std::string(py::str(py::type::of(h))));
  py::array arr = py::reinterpret_borrow<py::array>(h);
  RL_CHECK(arr.flags() & py::array::c_style, Value,
           "from_numpy: array is not C-contiguous; pass np.ascontiguousarray(a) (or use ringloom.tensor, which copies)");
  const std::string name = py::str(arr.dtype()).cast<std::string>();
  const DType dtype = dtype_from_py(py::str(name));
  Shape shape(arr.shape(), arr.shape() + arr.ndim());
  // A read-only array (writeable=False, a mode 'r' memmap, np.frombuffer over bytes) stays a
  // zero-copy view, marked read-only: ops that would write into it raise instead.
  const bool read_only = !arr.writeable();
  return Tensor::wrap(const_cast<void*>(arr.data()), shape, dtype, Device::cpu(), hold_python(arr), read_only);
}

}  // namespace ringloom::bindings

using namespace ringloom;
using namespace ringloom::bindings;

RINGLOOM_BIND(tensor, 0) {
  py::enum_<DType>(m, "DType")
      .value("float32", DType::Float32)
      .value("bfloat16", DType::BFloat16)
      .value("int32", DType::Int32)
      .value("int64", DType::Int64)
      .value("uint8", DType::UInt8)
      .value("float16", DType::Float16)
      .def("__str__", [](DType d) { return std::string(dtype_name(d)); })
      .def_property_readonly("itemsize", [](DType d) { return dtype_size(d); });

  py::class_<Tensor>(m, "Tensor", py::buffer_protocol(), "A contiguous n-d array on the CPU or a CUDA device")
      .def_buffer([](Tensor& t) -> py::buffer_info {
        RL_CHECK(t.is_cpu(), Value, "buffer protocol: tensor ", t.describe(), " is not on the CPU; use .numpy()");
        std::string fmt;
        switch (t.dtype()) {
          case DType::Float32: fmt = py::format_descriptor<float>::format(); break;
          case DType::Int32: fmt = py::format_descriptor<int32_t>::format(); break;
          case DType::Int64: fmt = py::format_descriptor<int64_t>::format(); break;
          case DType::UInt8: fmt = py::format_descriptor<uint8_t>::format(); break;
          case DType::Float16: fmt = "e"; break;
          case DType::BFloat16:
            // No buffer format means bfloat16; refusing makes NumPy fall back to __array__,
            // which returns an ml_dtypes.bfloat16 view.
            throw py::buffer_error("bfloat16 has no buffer-protocol format; use .numpy()");
        }
        std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end()), strides(t.shape().size());
        py::ssize_t s = py::ssize_t(dtype_size(t.dtype()));
        for (int i = int(shape.size()) - 1; i >= 0; --i) {
          strides[i] = s;
          s *= shape[i];
        }
        return py::buffer_info(t.data(), py::ssize_t(dtype_size(t.dtype())), fmt, py::ssize_t(shape.size()), shape,
                               strides, t.read_only());
      })
      .def_property_readonly("shape", [](const Tensor& t) { return py::tuple(py::cast(t.shape())); })
      .def_property_readonly("dtype", &Tensor::dtype)
      .def_property_readonly("device", [](const Tensor& t) { return t.device().str(); })
      .def_property_readonly("ndim", &Tensor::dim)
      .def_property_readonly("nbytes", &Tensor::nbytes)
      .def_property_readonly("is_cuda", &Tensor::is_cuda)
      .def_property_readonly("read_only", &Tensor::read_only,
                             "Whether this tensor views read-only memory (writes into it raise)")
      .def("numel", &Tensor::numel)
      .def("data_ptr", [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data()); })
      .def("__len__", [](const Tensor& t) {
        RL_CHECK(t.dim() > 0, Type, "len() of a 0-d tensor");
        return t.size(0);
      })
      .def("size", [](const Tensor& t, int64_t d) { return t.size(d); }, py::arg("dim"))
      .def("numpy", [](py::object self) { return to_numpy(self.cast<const Tensor&>(), self); },
           "A NumPy array: a view for CPU tensors (bfloat16 as ml_dtypes.bfloat16), a copy for CUDA tensors")
      .def("__array__",
           [](py::object self, py::object dtype, py::object copy) {
             py::array a = to_numpy(self.cast<const Tensor&>(), self);
             if (!dtype.is_none()) return py::array(a.attr("astype")(dtype));
             if (!copy.is_none() && copy.cast<bool>()) return py::array(a.attr("copy")());
             return a;
           },
           py::arg("dtype") = py::none(), py::arg("copy") = py::none())
      .def("to",
           [](const Tensor& t, py::object target) {
             if (py::isinstance<py::str>(target)) {
               const std::string s = target.cast<std::string>();
               if (s == "cpu" || s.rfind("cuda", 0) == 0) return t.to(Device::parse(s));
             }
             return t.to(dtype_from_py(target));
           },
           py::arg("target"), "Copy to a device ('cpu', 'cuda:0') or convert to a dtype")
      .def("cpu", [](const Tensor& t) { return t.to(Device::cpu()); })
      .def("cuda", [](const Tensor& t, int i) { return t.to(Device::cuda(i)); }, py::arg("index") = 0)
      .def("clone", &Tensor::clone)
      .def("reshape",
           [](const Tensor& t, py::args shape) {
             Shape s;
             if (shape.size() == 1 && !py::isinstance<py::int_>(shape[0])) s = shape[0].cast<Shape>();
             else s = shape.cast<Shape>();
             return t.reshape(s);
           })
      .def("narrow0", &Tensor::narrow0, py::arg("start"), py::arg("length"))
      .def("copy_", [](Tensor& t, const Tensor& src) -> Tensor& { t.copy_from(src); return t; }, py::arg("src"))
      .def("zero_", [](Tensor& t) -> Tensor& { t.zero_(); return t; })
      .def("shares_memory", &Tensor::shares_storage)
      .def("__dlpack__",
           [](const Tensor& t, py::object stream, py::object max_version, py::object dl_device, py::object copy) {
             return to_dlpack(t);
           },
           py::kw_only(), py::arg("stream") = py::none(), py::arg("max_version") = py::none(),
           py::arg("dl_device") = py::none(), py::arg("copy") = py::none())
      .def("__dlpack_device__",
           [](const Tensor& t) {
             return py::make_tuple(int(t.is_cpu() ? kDLCPU : kDLCUDA), t.is_cpu() ? 0 : t.device().index);
           })
      .def("__repr__", [](const Tensor& t) { return "<ringloom.Tensor " + t.describe() + ">"; });

  m.def("empty", [](const Shape& shape, py::object dtype, py::object device) {
        return Tensor::empty(shape, dtype_from_py(dtype), device_from_py(device));
      }, py::arg("shape"), py::arg("dtype") = "float32", py::arg("device") = "cpu");
  m.def("zeros", [](const Shape& shape, py::object dtype, py::object device) {
        return Tensor::zeros(shape, dtype_from_py(dtype), device_from_py(device));
      }, py::arg("shape"), py::arg("dtype") = "float32", py::arg("device") = "cpu");
  m.def("from_numpy", [](py::handle a) { return tensor_from_numpy(a); }, py::arg("array"),
        "Zero-copy view of a C-contiguous NumPy array (float32, bfloat16, float16, int32, int64, uint8). A "
        "read-only array gives a read-only tensor: ops that write into it raise ValueError");
  m.def("from_dlpack", &from_dlpack, py::arg("obj"), "Zero-copy import from any DLPack producer");
  m.def("cuda_available", &cuda_available);
  m.def("cuda_device_count", &cuda_device_count);
  m.def("cuda_synchronize", [](int device) {
    const DeviceBackend* b = backend_for(DeviceType::CUDA);
    RL_CHECK(b != nullptr, Runtime, "cuda_synchronize: this build has no CUDA backend");
    b->synchronize(device);
  }, py::arg("device") = 0);
  m.attr("has_cuda_build") =
#ifdef RINGLOOM_WITH_CUDA
      true;
#else
      false;
#endif
}
