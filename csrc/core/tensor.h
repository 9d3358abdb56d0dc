// Tensor: a contiguous, row-major n-d array of one dtype on one device, sharing its
// Storage with views (reshape, narrow along dim 0). No strides: every op reads and writes
// dense memory, which keeps the kernels simple; non-contiguous inputs are copied at the
// Python boundary.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace ringloom {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
// The element count; throws ValueError when the product overflows 64-bit sizes.
int64_t shape_numel(const Shape& s);
// Bytes of a tensor of this shape and dtype: dimensions >= 0 and every product checked
// (core/size.h); `op` names the caller in the error.
size_t shape_nbytes(const char* op, const Shape& s, DType dtype);
// The product of every dimension but the last (1 for a 0-d or 1-d shape): the rows of an op
// over the last dimension. Counted from the shape, not as numel / last, which is 0 when
// the last dimension is.
int64_t leading_rows(const Shape& s);

// Owns (or borrows, through `owner`) a block of memory on one device.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  std::function<void(void*)> deleter;  // empty: memory is borrowed and kept alive by owner
  std::shared_ptr<void> owner;
  // Borrowed memory its owner may not be written through (a read-only NumPy array or
  // memmap, an immutable bytes object): every write into it is refused.
  bool read_only = false;
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
  // Wraps memory that something else owns; `owner` is kept alive as long as any view is.
  static Tensor wrap(void* data, const Shape& shape, DType dtype, Device device, std::shared_ptr<void> owner,
                     bool read_only = false);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim() const { return int64_t(shape_.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }  // checked when the shape was set
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::cpu(); }
  bool is_cpu() const { return device().is_cpu(); }
  bool is_cuda() const { return device().is_cuda(); }
  bool read_only() const { return storage_ && storage_->read_only; }

  // Refuses a storage whose memory was released (core/storage_swap.h): no op may read or
  // write through it until it is bound or allocated again.
  void* data() const {
    if (!storage_) return nullptr;
    if (storage_->data == nullptr && storage_->nbytes != 0) throw_released();
    return static_cast<char*>(storage_->data) + offset_;
  }
  template <typename T>
  T* data_as() const { return static_cast<T*>(data()); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  bool shares_storage(const Tensor& o) const { return storage_ && storage_ == o.storage_; }

  // Views (share storage).
  Tensor reshape(const Shape& shape) const;     // one dim may be -1
  Tensor narrow0(int64_t start, int64_t length) const;  // rows [start, start+length) of dim 0

  // Copies.
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;  // float32 <-> bfloat16 and integer widening/narrowing
  Tensor clone() const;
  void copy_from(const Tensor& src);  // same shape and dtype, any devices
  void zero_();

  // "float32[2, 3] on cpu"
  std::string describe() const;

 private:
  [[noreturn]] void throw_released() const;
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::Float32;
};

}  // namespace ringloom
