// A full mesh of TCP connections among the members of one process group, set up through
// the store: every member listens on an ephemeral port and publishes "<prefix>/addr/<i>";
// member i connects to every j < i and accepts from every j > i. Each connection starts
// with a handshake carrying the job token and the member's index, so a process of another
// job (or a stray connection) is refused. The listener binds to RINGLOOM_MESH_ADDR, or by
// default to this host's address on the interface that reaches the store (loopback when
// MASTER_ADDR is), not to every interface; incoming handshakes are read side by side,
// each within a few seconds, so silent connections cannot stall the set-up.
//
// Sends are asynchronous: each peer has its own sender thread draining a FIFO of buffers,
// so a send to one peer never waits on another, and the calling thread only ever blocks in
// recv(). The algorithms rely on that: with sends that cannot block the caller, a schedule
// deadlocks only if its receives wait in a cycle, and ring and tree schedules do not.
// Buffers handed to send() must stay untouched until flush() returns.
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/socket.h"
#include "comm/store.h"

namespace ringloom::comm {

class PeerLinks {
 public:
  // `members[i]` is the global rank of group member i; `me` is this process's index.
  PeerLinks(StoreClient& store, const std::string& prefix, int me, std::vector<int> members, const std::string& token,
       double timeout_s);
  ~PeerLinks();
  PeerLinks(const PeerLinks&) = delete;
  PeerLinks& operator=(const PeerLinks&) = delete;

  int me() const { return me_; }
  int size() const { return int(members_.size()); }
  int global_rank(int i) const { return members_[size_t(i)]; }

  // Names the collective in progress, for error messages from any thread.
  // Called by the thread that issues sends; queued sends keep the name they were issued under.
  void begin(const std::string& op) { op_ = std::make_shared<const std::string>(op); }

  // Queued; returns at once. `done`, if given, runs on the sender thread once the bytes
  // were handed to the kernel (null) or the send failed (the error).
  using Done = std::function<void(std::exception_ptr)>;
  void send(int peer, const void* p, size_t n, Deadline d, Done done = nullptr);
  void recv(int peer, void* p, size_t n, Deadline d);        // blocks until all n bytes arrived
  void flush(Deadline d);  // waits until every queued send left; throws the first send error

  // Breaks every connection (peers then see EOF); used when an op failed half-way.
  void abort();

 private:
  struct Peer;
  void sender_loop(Peer& p);
  void accept_higher(Listener& listener, const std::string& prefix, const std::string& token, Deadline d);
  IoContext ctx(int peer, const char* dir, const std::string& op) const;

  int me_;
  std::vector<int> members_;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::shared_ptr<const std::string> op_ = std::make_shared<const std::string>("setup");
  double timeout_s_;
};

}  // namespace ringloom::comm
