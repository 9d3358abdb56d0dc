#include "ops/attention_backend.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>

#include "core/error.h"
#include "ops/attention_auto_table.h"

namespace ringloom {

namespace {
AttentionBackend initial() {
  const char* v = std::getenv("RINGLOOM_ATTENTION");
  if (v == nullptr || *v == '\0') return AttentionBackend::Ours;
  try {
    return parse_attention_backend(v);
  } catch (const Error&) {
    return AttentionBackend::Ours;  // a bad variable must not break import; set_ reports it
  }
}
std::atomic<int>& current() {
  static std::atomic<int> b{int(initial())};
  return b;
}
// -1: no scope override on this thread.
thread_local int scoped = -1;
}  // namespace

void set_attention_backend(AttentionBackend b) { current().store(int(b)); }
AttentionBackend attention_backend() { return AttentionBackend(scoped >= 0 ? scoped : current().load()); }

AttentionBackendScope::AttentionBackendScope(std::optional<AttentionBackend> b) : saved_(scoped) {
  if (b) scoped = int(*b);
}
AttentionBackendScope::~AttentionBackendScope() { scoped = saved_; }

AttentionBackend parse_attention_backend(const std::string& name) {
  if (name == "ours") return AttentionBackend::Ours;
  if (name == "cudnn") return AttentionBackend::Cudnn;
  if (name == "auto") return AttentionBackend::Auto;
  fail(ErrorKind::Value, "attention backend must be \"ours\", \"cudnn\" or \"auto\", got \"", name, "\"");
}

const char* attention_backend_name(AttentionBackend b) {
  switch (b) {
    case AttentionBackend::Cudnn: return "cudnn";
    case AttentionBackend::Auto: return "auto";
    default: return "ours";
  }
}

bool hopper_attention_built() {
#ifdef RINGLOOM_WITH_SM90A_ATTENTION
  return true;
#else
  return false;
#endif
}

bool cudnn_attention_built() {
#if defined(RINGLOOM_WITH_CUDA) && defined(RINGLOOM_WITH_CUDNN_FRONTEND)
  return true;
#else
  return false;
#endif
}

std::vector<std::string> attention_backend_candidates() {
  std::vector<std::string> names = {attention_backend_name(AttentionBackend::Ours)};
  if (cudnn_attention_built()) names.push_back(attention_backend_name(AttentionBackend::Cudnn));
  return names;
}

AttentionBackend attention_auto_choice(int64_t head_dim, bool causal, int64_t seq_len, bool backward) {
  const attention_auto::Row* best = nullptr;
  double best_dist = 0.0;
  for (const attention_auto::Row& r : attention_auto::kTable) {
    if (r.head_dim != head_dim || r.causal != causal) continue;
    const double dist = std::fabs(std::log2(double(std::max<int64_t>(seq_len, 1)) / r.seq_len));
    if (best == nullptr || dist < best_dist) best = &r, best_dist = dist;
  }
  if (best == nullptr) return AttentionBackend::Ours;
  const AttentionBackend b = parse_attention_backend(backward ? best->backward : best->forward);
  return b == AttentionBackend::Cudnn && !cudnn_attention_built() ? AttentionBackend::Ours : b;
}

}  // namespace ringloom
