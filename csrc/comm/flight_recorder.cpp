#include "comm/flight_recorder.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "comm/algorithms.h"
#include "comm/reduce.h"
#include "core/error.h"

namespace ringloom::comm {

const char* call_kind_name(CallKind k) {
  switch (k) {
    case CallKind::AllReduce: return "all_reduce";
    case CallKind::ReduceScatter: return "reduce_scatter";
    case CallKind::AllGather: return "all_gather";
    case CallKind::Broadcast: return "broadcast";
    case CallKind::Barrier: return "barrier";
    case CallKind::Send: return "send";
    case CallKind::Recv: return "recv";
    case CallKind::Other: return "op";
  }
  return "unknown collective";
}

namespace {

std::string dtype_text(int64_t t) {
  return t >= 0 && t <= int64_t(DType::Float16) ? dtype_name(DType(t)) : str_cat("dtype ", t);
}
std::string reduce_text(int64_t r) {
  return r >= 0 && r <= int64_t(ReduceOp::Max) ? reduce_op_name(ReduceOp(r)) : str_cat("op ", r);
}

// The compared fields, in order, and how each value reads in a message.
constexpr int kFields = 6;
const char* const kFieldNames[kFields] = {"collective number", "collective", "dtype", "element count", "root",
                                          "reduce op"};

std::string field_text(int f, int64_t v) {
  switch (f) {
    case 1: return call_kind_name(CallKind(v));
    case 2: return dtype_text(v);
    case 5: return reduce_text(v);
    default: return std::to_string(v);
  }
}

}  // namespace

std::string describe(const CallDesc& d) {
  std::string s = call_kind_name(d.kind);
  if (d.reduce >= 0) s += str_cat(" ", reduce_text(d.reduce));
  if (d.dtype >= 0) s += str_cat(" ", dtype_text(d.dtype), " x ", d.count);
  if (d.root >= 0) s += str_cat(" from rank ", d.root);
  if (d.peer >= 0) s += str_cat(d.kind == CallKind::Send ? " to rank " : " from rank ", d.peer);
  return s;
}

bool check_collectives_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("RINGLOOM_CHECK_COLLECTIVES");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  return on;
}

void agree_on_call(PeerLinks& links, const CallDesc& desc, uint64_t seq, Deadline d, const std::string& where) {
  const int64_t mine[kFields] = {int64_t(seq), int64_t(desc.kind), desc.dtype, desc.count, desc.root, desc.reduce};
  // [max of each field | max of each negated field]: every rank learns each field's range.
  int64_t buf[2 * kFields];
  for (int f = 0; f < kFields; ++f) {
    buf[f] = mine[f];
    buf[kFields + f] = -mine[f];
  }
  tree_all_reduce(links, Span{reinterpret_cast<char*>(buf), size_t(2 * kFields), 8}, DType::Int64, ReduceOp::Max, d);
  std::string diff;
  for (int f = 0; f < kFields; ++f) {
    const int64_t hi = buf[f], lo = -buf[kFields + f];
    if (hi == lo) continue;
    diff += str_cat(diff.empty() ? "" : "; ", kFieldNames[f], ": ", field_text(f, lo), " on one rank, ",
                    field_text(f, hi), " on another (this rank: ", field_text(f, mine[f]), ")");
  }
  RL_CHECK(diff.empty(), Value, where, ": the ranks called different collectives at call #", seq, " (this rank: ",
           describe(desc), "): ", diff,
           ". Every rank must issue the same collectives, with the same sizes and dtypes, in the same order");
}

void FlightRecorder::begin(uint64_t seq, const std::string& op, const CallDesc& desc) {
  std::lock_guard<std::mutex> l(mu_);
  current_ = Entry{seq, op, desc, Clock::now(), 0};
  active_ = true;
}

void FlightRecorder::end(bool ok) {
  std::lock_guard<std::mutex> l(mu_);
  if (!active_) return;
  active_ = false;
  if (!ok) return;  // a failed call stays in the report as the one in flight
  current_.seconds = std::chrono::duration<double>(Clock::now() - current_.start).count();
  done_.push_back(current_);
  if (done_.size() > kKeep) done_.pop_front();
}

std::string FlightRecorder::report() const {
  std::lock_guard<std::mutex> l(mu_);
  char secs[32];
  std::string s = "in flight: ";
  const double age = std::chrono::duration<double>(Clock::now() - current_.start).count();
  std::snprintf(secs, sizeof secs, "%.3f", age);
  auto what = [](const Entry& e) {
    return e.desc.kind == CallKind::Other ? e.op : str_cat(e.op, " (", describe(e.desc), ")");
  };
  s += str_cat("#", current_.seq, " ", what(current_), ", started ", secs, " s ago");
  s += "; last completed: ";
  if (done_.empty()) s += "none";
  for (auto it = done_.rbegin(); it != done_.rend(); ++it) {
    std::snprintf(secs, sizeof secs, "%.3f", it->seconds);
    s += str_cat(it == done_.rbegin() ? "" : ", ", "#", it->seq, " ", what(*it), " in ", secs, " s");
  }
  return s;
}

}  // namespace ringloom::comm
