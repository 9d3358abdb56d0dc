// Times the norm backward and the cross-entropy kernels outside the package, against
// cudaMemcpy of the same bytes, with candidate variants side by side (one GPU, seconds).
//   dev/norms/run.sh   (or: nvcc -gencode=arch=compute_90,code=sm_90 -O3 -std=c++17 -Icsrc -I. \
//        --expt-relaxed-constexpr -o /tmp/norms dev/norms/harness.cu && /tmp/norms)
// Inputs rotate over 4 copies so every pass comes from memory, as in benchmarks/. Each
// variant's outputs are compared with the shipped kernel's before it is timed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "ops/cuda/norm_kernels.cuh"

using namespace ringloom::cuda;
using namespace ringloom::cuda::norm;

#define CK(x)                                                                        \
  do {                                                                               \
    cudaError_t e = (x);                                                             \
    if (e != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

namespace {

constexpr int kCopies = 4;
cudaStream_t g_stream;
int g_sms;

// Median over 7 samples of (elapsed / n) for n back-to-back calls of fn(i), in microseconds.
double time_us(const std::function<void(int)>& fn, int n = 100) {
  for (int i = 0; i < 20; ++i) fn(i);
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int s = 0; s < 7; ++s) {
    CK(cudaEventRecord(a, g_stream));
    for (int i = 0; i < n; ++i) fn(i);
    CK(cudaEventRecord(b, g_stream));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1000.0f / n);
  }
  CK(cudaGetLastError());
  std::sort(t.begin(), t.end());
  return t[3];
}

// GB/s of a device-to-device copy moving `bytes` in all (read + write), rotating copies.
double copy_gbs(size_t bytes) {
  const size_t half = bytes / 2;
  std::vector<void*> src(kCopies), dst(kCopies);
  for (int i = 0; i < kCopies; ++i) {
    CK(cudaMalloc(&src[i], half));
    CK(cudaMalloc(&dst[i], half));
    CK(cudaMemset(src[i], 0, half));
  }
  const double us = time_us([&](int i) { CK(cudaMemcpyAsync(dst[i % kCopies], src[i % kCopies], half,
                                                            cudaMemcpyDeviceToDevice, g_stream)); },
                            bytes > (1u << 30) ? 10 : 100);
  for (int i = 0; i < kCopies; ++i) {
    CK(cudaFree(src[i]));
    CK(cudaFree(dst[i]));
  }
  return 2.0 * half / us / 1e3;
}

uint16_t to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
float bf16_bits_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::vector<uint16_t> random_bf16(size_t n, uint32_t seed, float scale, float offset = 0.0f) {
  std::vector<uint16_t> v(n);
  uint32_t s = seed;
  for (auto& e : v) {
    s = s * 1664525u + 1013904223u;
    e = to_bf16_bits(offset + scale * ((s >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f));
  }
  return v;
}

template <typename T>
T* upload(const std::vector<T>& h) {
  T* d;
  CK(cudaMalloc(&d, h.size() * sizeof(T)));
  CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
template <typename T>
std::vector<T> download(const T* d, size_t n) {
  std::vector<T> h(n);
  CK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

struct Report {
  std::string name;
  double us, gbs;
};

void print(const Report& r, double copy, double same) {
  std::printf("  %-44s %8.2f us %7.0f GB/s %5.1f%% of copy %5.1f%% of same-size copy\n", r.name.c_str(), r.us, r.gbs,
              100.0 * r.gbs / copy, 100.0 * r.gbs / same);
}

}  // namespace

#include "dev/norms/variants.cuh"

int main() {
  CK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  CK(cudaDeviceGetAttribute(&g_sms, cudaDevAttrMultiProcessorCount, 0));
  const double copy = copy_gbs(size_t(4) << 30);
  std::printf("copy rate (2 GiB each way): %.0f GB/s\n", copy);
  run_norm_variants(copy);
  run_cross_entropy_variants(copy);
  return 0;
}
