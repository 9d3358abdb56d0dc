#include "core/tensor.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/backend.h"
#include "core/check.h"
#include "core/size.h"
#include "core/transfer_stats.h"

namespace ringloom {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    RL_CHECK(d >= 0, Value, "negative dimension in shape ", shape_str(s));
    RL_CHECK(d == 0 || n <= std::numeric_limits<int64_t>::max() / d, Value, "shape ", shape_str(s),
             " has more elements than 64-bit sizes can count");
    n *= d;
  }
  return n;
}

int64_t leading_rows(const Shape& s) {
  return s.empty() ? 1 : shape_numel(Shape(s.begin(), s.end() - 1));
}

size_t shape_nbytes(const char* op, const Shape& s, DType dtype) {
  for (int64_t d : s) RL_CHECK(d >= 0, Value, op, ": negative dimension in shape ", shape_str(s));
  int64_t n = 1;
  for (int64_t d : s) n = checked_mul(n, d, str_cat(op, ": shape ", shape_str(s)).c_str());
  return size_t(checked_mul(n, int64_t(dtype_size(dtype)),
                            str_cat(op, ": bytes of ", dtype_name(dtype), shape_str(s)).c_str()));
}

void Tensor::throw_released() const {
  fail(ErrorKind::Runtime, "a tensor (", describe(), ") whose memory is released was given to an op; allocate it "
       "again first (zero_grad(), or the next backward, for a released gradient)");
}

Storage::~Storage() {
  if (deleter && data) deleter(data);
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    const std::string idx = s.substr(5);
    if (!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos && idx.size() < 6)
      return cuda(std::stoi(idx));
  }
  fail(ErrorKind::Value, "invalid device '", s, "': expected 'cpu', 'cuda' or 'cuda:N'");
}

int cuda_device_count() {
  const DeviceBackend* b = backend_for(DeviceType::CUDA);
  return b && b->device_count ? b->device_count() : 0;
}
bool cuda_available() { return cuda_device_count() > 0; }

namespace {
const DeviceBackend* g_backends[2] = {nullptr, nullptr};

const DeviceBackend& require_backend(Device d, const char* what) {
  const DeviceBackend* b = backend_for(d.type);
  RL_CHECK(b != nullptr, Runtime, what, ": device ", d.str(),
           " is not available in this build of ringloom (built without CUDA)");
  if (d.is_cuda()) {
    const int n = b->device_count();
    RL_CHECK(d.index >= 0 && d.index < n, Value, what, ": device ", d.str(), " does not exist (",
             n, " CUDA device(s) visible)");
  }
  return *b;
}

void* cpu_alloc(size_t nbytes) {
  // 64-byte alignment: whole cache lines, and aligned vector loads in the CPU kernels.
  size_t rounded = (nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded ? rounded : 64);
  RL_CHECK(p != nullptr, Runtime, "out of host memory allocating ", nbytes, " bytes");
  return p;
}
}  // namespace

const DeviceBackend* backend_for(DeviceType t) { return t == DeviceType::CPU ? nullptr : g_backends[int(t)]; }
void register_backend(DeviceType t, const DeviceBackend* b) { g_backends[int(t)] = b; }

int64_t Tensor::size(int64_t d) const {
  const int64_t n = dim();
  RL_CHECK(d >= -n && d < n, Index, "dimension ", d, " out of range for tensor ", describe());
  return shape_[d < 0 ? d + n : d];
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  const size_t nbytes = shape_nbytes("Tensor.empty", shape, dtype);
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  auto st = std::make_shared<Storage>();
  st->nbytes = nbytes;
  st->device = device;
  if (device.is_cpu()) {
    st->data = cpu_alloc(st->nbytes);
    st->deleter = [](void* p) { std::free(p); };
  } else {
    const DeviceBackend& b = require_backend(device, "Tensor.empty");
    st->data = b.alloc(st->nbytes, device.index);
    const size_t nb = st->nbytes;
    const int idx = device.index;
    const DeviceBackend* bp = &b;
    st->deleter = [bp, nb, idx](void* p) { bp->free(p, nb, idx); };
  }
  t.storage_ = std::move(st);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::wrap(void* data, const Shape& shape, DType dtype, Device device, std::shared_ptr<void> owner,
                    bool read_only) {
  const size_t nbytes = shape_nbytes("Tensor.wrap", shape, dtype);
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  auto st = std::make_shared<Storage>();
  st->data = data;
  st->nbytes = nbytes;
  st->device = device;
  st->owner = std::move(owner);
  st->read_only = read_only;
  t.storage_ = std::move(st);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      RL_CHECK(infer < 0, Value, "reshape: more than one -1 in ", shape_str(shape));
      infer = int64_t(i);
    } else {
      RL_CHECK(s[i] >= 0, Value, "reshape: negative dimension in ", shape_str(shape));
      known = checked_mul(known, s[i], str_cat("reshape to ", shape_str(shape)).c_str());
    }
  }
  if (infer >= 0) {
    RL_CHECK(known > 0 && numel() % known == 0, Value, "reshape: cannot reshape ", describe(), " to ",
             shape_str(shape));
    s[infer] = numel() / known;
  }
  RL_CHECK(shape_numel(s) == numel(), Value, "reshape: cannot reshape ", describe(), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = s;
  return t;
}

Tensor Tensor::narrow0(int64_t start, int64_t length) const {
  RL_CHECK(dim() >= 1, Value, "narrow0: tensor ", describe(), " has no dimension 0");
  // Compared without forming start + length, which could wrap.
  RL_CHECK(start >= 0 && length >= 0 && start <= shape_[0] && length <= shape_[0] - start, Index, "narrow0: ",
           length, " rows from row ", start, " are out of range for ", describe());
  Tensor t = *this;
  // start * row <= numel: bounded by the checked size of this tensor.
  const int64_t row = shape_numel(Shape(shape_.begin() + 1, shape_.end()));
  t.offset_ += size_t(start * row) * dtype_size(dtype_);
  t.shape_[0] = length;
  return t;
}

namespace {
std::atomic<uint64_t> g_to_host_bytes{0}, g_to_host_copies{0}, g_from_host_bytes{0}, g_from_host_copies{0};
}  // namespace

HostTransferStats host_transfer_stats() {
  return {g_to_host_bytes.load(), g_to_host_copies.load(), g_from_host_bytes.load(), g_from_host_copies.load()};
}

void reset_host_transfer_stats() {
  g_to_host_bytes = g_to_host_copies = g_from_host_bytes = g_from_host_copies = 0;
}

void Tensor::copy_from(const Tensor& src) {
  RL_CHECK(defined() && src.defined(), Value, "copy_from: undefined tensor");
  check_writable("copy_", "the destination", *this);
  RL_CHECK(shape_ == src.shape_ && dtype_ == src.dtype_, Value, "copy_from: destination ", describe(),
           " and source ", src.describe(), " differ in shape or dtype");
  const size_t n = nbytes();
  if (n == 0) return;
  const Device d = device(), s = src.device();
  if (d.is_cpu() && s.is_cpu()) {
    std::memmove(data(), src.data(), n);
  } else if (d.is_cpu()) {
    require_backend(s, "copy").copy(data(), src.data(), n, 1, s.index);
    g_to_host_bytes += n;
    ++g_to_host_copies;
  } else if (s.is_cpu()) {
    require_backend(d, "copy").copy(data(), src.data(), n, 0, d.index);
    g_from_host_bytes += n;
    ++g_from_host_copies;
  } else {
    require_backend(d, "copy").copy(data(), src.data(), n, 2, d.index);
  }
}

void Tensor::zero_() {
  check_writable("zero_", "the tensor", *this);
  if (nbytes() == 0) return;
  if (is_cpu()) std::memset(data(), 0, nbytes());
  else require_backend(device(), "zero_").memset(data(), 0, nbytes(), device().index);
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  t.copy_from(*this);
  return t;
}

Tensor convert_dtype_cuda(const Tensor& src, DType dtype);  // cuda/convert.cu

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  if (!is_cpu()) {
#ifdef RINGLOOM_WITH_CUDA
    return convert_dtype_cuda(*this, dtype);
#else
    fail(ErrorKind::Runtime, "to(dtype): ", describe(), " is not on the CPU");
#endif
  }
  Tensor out = empty(shape_, dtype, device());
  const int64_t n = numel();
  // Read every element as double (exact for all our dtypes but int64 beyond 2^53), write back.
  auto load = [&](int64_t i) -> double {
    switch (dtype_) {
      case DType::Float32: return data_as<float>()[i];
      case DType::BFloat16: return bf16_bits_to_float(data_as<uint16_t>()[i]);
      case DType::Int32: return data_as<int32_t>()[i];
      case DType::Int64: return double(data_as<int64_t>()[i]);
      case DType::UInt8: return data_as<uint8_t>()[i];
      default: fail(ErrorKind::Type, "to(dtype): unsupported source dtype ", dtype_name(dtype_));
    }
  };
  if (dtype_ == DType::Int64 && dtype == DType::Int32) {
    for (int64_t i = 0; i < n; ++i) out.data_as<int32_t>()[i] = int32_t(data_as<int64_t>()[i]);
    return out;
  }
  for (int64_t i = 0; i < n; ++i) {
    const double v = load(i);
    switch (dtype) {
      case DType::Float32: out.data_as<float>()[i] = float(v); break;
      case DType::BFloat16: out.data_as<uint16_t>()[i] = float_to_bf16_bits(float(v)); break;
      case DType::Int32: out.data_as<int32_t>()[i] = int32_t(v); break;
      case DType::Int64: out.data_as<int64_t>()[i] = int64_t(v); break;
      case DType::UInt8: out.data_as<uint8_t>()[i] = uint8_t(v); break;
      default: fail(ErrorKind::Type, "to(dtype): unsupported target dtype ", dtype_name(dtype));
    }
  }
  return out;
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return str_cat(dtype_name(dtype_), shape_str(shape_), " on ", device().str());
}

}  // namespace ringloom
