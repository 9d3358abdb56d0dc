// What the collectives of a process group are doing, for two purposes:
//
// 1. Agreement. Before a collective moves any data, the ranks compare a small descriptor
//    of the call (which collective, sequence number, dtype, element count, root, reduce
//    op) with one extra tree all-reduce of 12 int64s: the max of each field and the max
//    of its negation, i.e. its range over the ranks. If any range is not a single value the
//    ranks called different collectives (8 elements here and 12 there, float32 against
//    int32): every rank raises the same ValueError naming both values, before data that
//    would have been garbage moves, and the group stays usable. One round of latency per
//    call; RINGLOOM_CHECK_COLLECTIVES=0 turns it off.
// 2. A flight recorder (after PyTorch's): the call in flight and the last few completed,
//    so a rank whose collective fails or times out says where it was and what came before;
//    the stuck rank is then the one whose history ends earliest.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>

#include "comm/socket.h"
#include "core/dtype.h"

namespace ringloom::comm {

class PeerLinks;

enum class CallKind : int64_t { Other = 0, AllReduce = 1, ReduceScatter, AllGather, Broadcast, Barrier, Send, Recv };

struct CallDesc {
  CallKind kind = CallKind::Other;  // Other: described by the op's name alone (the CUDA IPC path)
  int64_t dtype = -1;   // DType, -1 when no tensor
  int64_t count = 0;    // elements per rank: the tensor (all_reduce, broadcast), output (reduce_scatter), input (all_gather)
  int64_t root = -1;    // broadcast's source
  int64_t reduce = -1;  // ReduceOp
  int64_t peer = -1;    // send/recv's other rank (not compared: point-to-point)
  bool compare = false; // a TCP collective whose ranks agree_on_call first
};

const char* call_kind_name(CallKind k);
std::string describe(const CallDesc& d);  // "all_reduce sum float32 x 8"

bool check_collectives_enabled();  // RINGLOOM_CHECK_COLLECTIVES, default on

// Compares this rank's descriptor of collective number `seq` with every other rank's (a tree
// all-reduce over the mesh); throws ValueError starting with `where` on any difference.
void agree_on_call(PeerLinks& links, const CallDesc& desc, uint64_t seq, Deadline d, const std::string& where);

class FlightRecorder {
 public:
  static constexpr size_t kKeep = 8;  // completed calls kept
  void begin(uint64_t seq, const std::string& op, const CallDesc& desc);
  void end(bool ok);
  // "in flight: #12 all_reduce [ring] (all_reduce sum float32 x 8), for 30.0 s; last completed: #11 ..., #10 ..."
  std::string report() const;

 private:
  struct Entry {
    uint64_t seq = 0;
    std::string op;
    CallDesc desc;
    Clock::time_point start;
    double seconds = 0;
  };
  mutable std::mutex mu_;
  bool active_ = false;
  Entry current_;
  std::deque<Entry> done_;
};

}  // namespace ringloom::comm
