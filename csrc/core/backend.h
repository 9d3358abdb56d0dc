// Per-device-type hooks: allocation, copies, fill. The CPU backend is built in; the CUDA
// backend registers itself from csrc/core/cuda/backend.cu when the build has CUDA, so the
// core compiles without CUDA headers.
#pragma once
#include <cstddef>

#include "core/device.h"

namespace ringloom {

struct DeviceBackend {
  void* (*alloc)(size_t nbytes, int device) = nullptr;
  void (*free)(void* ptr, size_t nbytes, int device) = nullptr;
  // Copies nbytes between any two of (host, this device type); kind: 0 h2d, 1 d2h, 2 d2d.
  void (*copy)(void* dst, const void* src, size_t nbytes, int kind, int device) = nullptr;
  void (*memset)(void* dst, int value, size_t nbytes, int device) = nullptr;
  void (*synchronize)(int device) = nullptr;
  int (*device_count)() = nullptr;
};

// nullptr when the build has no backend of that type.
const DeviceBackend* backend_for(DeviceType t);
void register_backend(DeviceType t, const DeviceBackend* b);

}  // namespace ringloom
