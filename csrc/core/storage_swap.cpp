#include "core/storage_swap.h"

#include <utility>

namespace ringloom {
namespace {

Storage& whole_storage(const Tensor& t, const char* what) {
  RL_CHECK(t.defined(), Value, what, ": undefined tensor");
  Storage& st = *t.storage();
  RL_CHECK(t.nbytes() == st.nbytes && (st.data == nullptr || t.data() == st.data), Value, what,
           ": the tensor (", t.describe(), ") must cover its whole storage (", st.nbytes, " bytes), not a view into it");
  return st;
}

void drop(Storage& st) {
  if (st.deleter && st.data) st.deleter(st.data);
  st.data = nullptr;
  st.deleter = nullptr;
  st.owner.reset();
}

}  // namespace

void storage_release(const Tensor& t) { drop(whole_storage(t, "storage_release")); }

void storage_bind(const Tensor& t, const Tensor& src) {
  Storage& st = whole_storage(t, "storage_bind");
  RL_CHECK(src.defined() && src.data() != nullptr, Value, "storage_bind: the source has no memory");
  RL_CHECK(src.dtype() == t.dtype() && src.numel() == t.numel() && src.device() == t.device(), Value,
           "storage_bind: source ", src.describe(), " must have the dtype, element count and device of ", t.describe());
  RL_CHECK(src.storage() != t.storage(), Value, "storage_bind: a storage cannot view itself");
  drop(st);
  st.data = src.data();
  st.owner = src.storage();
}

void storage_allocate(const Tensor& t) {
  Storage& st = whole_storage(t, "storage_allocate");
  Tensor fresh = Tensor::empty(t.shape(), t.dtype(), t.device());
  Storage& f = *fresh.storage();
  drop(st);
  st.data = std::exchange(f.data, nullptr);
  st.deleter = std::exchange(f.deleter, nullptr);
}

bool storage_has_memory(const Tensor& t) { return t.defined() && t.storage()->data != nullptr; }

uintptr_t storage_id(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.storage().get()); }

}  // namespace ringloom
