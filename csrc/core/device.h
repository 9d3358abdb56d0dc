// Where a tensor lives: "cpu" or "cuda:N".
#pragma once
#include <cstdint>
#include <string>

namespace ringloom {

enum class DeviceType : uint8_t { CPU = 0, CUDA = 1 };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int i) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && (is_cpu() || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

  // Parses "cpu", "cuda", "cuda:N"; throws ValueError otherwise.
  static Device parse(const std::string& s);
};

// True when this build has the CUDA backend and at least one device is visible.
bool cuda_available();
int cuda_device_count();

}  // namespace ringloom
