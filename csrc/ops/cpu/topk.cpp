// CPU top-k compression and accumulation; the contract is in ops/topk.h.
//
// Selection: each element becomes one 64-bit key, (magnitude key << 32) | (2^32 - 1 - i),
// so that ordering the keys descending orders (|x| descending, i ascending) exactly;
// std::nth_element puts the k largest keys first in O(n), and only those k are sorted (by
// index, the payload order).
#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "core/error.h"
#include "ops/topk.h"

namespace ringloom::cpu {

void topk_compress(Tensor& acc, int64_t k, Tensor& payload) {
  const int64_t n = acc.numel();
  float* a = acc.data_as<float>();
  std::vector<uint64_t> keys(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, a + i, 4);
    keys[size_t(i)] = (uint64_t(topk_magnitude_key(bits)) << 32) | uint64_t(0xffffffffu - uint32_t(i));
  }
  std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<uint64_t>());
  std::vector<int32_t> idx(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) idx[size_t(j)] = int32_t(0xffffffffu - uint32_t(keys[size_t(j)] & 0xffffffffu));
  std::sort(idx.begin(), idx.end());
  float* p = payload.data_as<float>();
  for (int64_t j = 0; j < k; ++j) {
    const int32_t i = idx[size_t(j)];
    p[j] = a[i];
    std::memcpy(p + k + j, &i, 4);  // the index's bits as an fp32 word
    a[i] = 0.0f;
  }
}

void topk_accumulate(Tensor& out, const Tensor& gathered, int64_t world, int64_t k) {
  const int64_t n = out.numel();
  const float* g = gathered.data_as<float>();
  // Every index checked before anything is written.
  for (int64_t r = 0; r < world; ++r) {
    const float* part = g + 2 * k * r;
    int64_t prev = -1;
    for (int64_t j = 0; j < k; ++j) {
      int32_t i;
      std::memcpy(&i, part + k + j, 4);
      RL_CHECK(i >= 0 && i < n && i > prev, Value, "topk_accumulate: rank ", r, "'s index ", j, " is ", i,
               "; indices must be strictly increasing and inside [0, ", n, ")");
      prev = i;
    }
  }
  float* o = out.data_as<float>();
  std::fill(o, o + n, 0.0f);
  for (int64_t r = 0; r < world; ++r) {
    const float* part = g + 2 * k * r;
    for (int64_t j = 0; j < k; ++j) {
      int32_t i;
      std::memcpy(&i, part + k + j, 4);
      o[i] += part[j];
    }
  }
}

}  // namespace ringloom::cpu
