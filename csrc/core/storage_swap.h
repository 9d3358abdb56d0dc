// Swapping the memory under a tensor's storage, for sharded training (ZeRO-3, FSDP): a
// parameter whose values live as shards on the data-parallel ranks has no memory between
// uses; before its layer runs, its storage is pointed at the all-gathered values, and it is
// emptied again afterwards. Every Tensor sharing the storage (the layer's Param, Python
// handles) sees the change, because they share the Storage object itself.
//
// An emptied tensor must not reach an op until it is bound or allocated again: its data
// pointer is null. Each function takes a tensor that covers its whole storage (a
// parameter or gradient as a layer made it, not a view into part of a buffer).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace ringloom {

// Frees (or lets go of) the memory; has_memory(t) is false afterwards.
void storage_release(const Tensor& t);
// t's storage now views src's memory (same dtype, element count and device), keeping src's
// storage alive until the next release.
void storage_bind(const Tensor& t, const Tensor& src);
// Fresh, uninitialised memory of t's size from t's device allocator.
void storage_allocate(const Tensor& t);
bool storage_has_memory(const Tensor& t);
// A number naming the Storage object, stable across release/bind/allocate (data_ptr is not).
uintptr_t storage_id(const Tensor& t);

}  // namespace ringloom
