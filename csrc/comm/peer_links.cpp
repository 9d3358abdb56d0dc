#include "comm/peer_links.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace ringloom::comm {

namespace {

constexpr uint32_t kMeshMagic = 0x524C4D48;  // "RLMH"
constexpr double kHandshakeSeconds = 5.0;    // per incoming connection
constexpr size_t kMaxPendingHandshakes = 64;

void put_u32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(char((v >> (8 * i)) & 0xFF));
}
uint32_t get_u32(const std::string& s, size_t at) {
  auto b = [&](size_t i) { return uint32_t(uint8_t(s[at + i])); };
  return b(0) | b(1) << 8 | b(2) << 16 | b(3) << 24;
}

// The address the mesh listens on: RINGLOOM_MESH_ADDR if set, else the address of this
// host's interface that reaches the store (127.0.0.1 when MASTER_ADDR is loopback), so
// the mesh is reachable exactly where the job lives rather than on every interface.
std::string mesh_bind_address(const StoreClient& store) {
  const char* e = std::getenv("RINGLOOM_MESH_ADDR");
  return e && *e ? std::string(e) : store.local_address();
}

// An incoming connection whose handshake is not complete yet.
struct Pending {
  Socket sock;
  std::string in;
  Deadline until;
};

// Judges the handshake bytes received so far: -2 = need more, -1 = not a member of this
// job and group (drop it), else the sender's member index. The token is checked as soon as
// its bytes are in, before anything after it is read, and nothing longer than our own
// token and prefix is ever buffered.
int judge_hello(const std::string& in, const std::string& token, const std::string& prefix, int me, int n) {
  size_t at = 0;
  auto need = [&](size_t k) { return in.size() < at + k; };
  if (need(8)) return -2;
  if (get_u32(in, 0) != kMeshMagic || get_u32(in, 4) != token.size()) return -1;
  at = 8;
  if (need(token.size())) return in.compare(at, std::string::npos, token, 0, in.size() - at) == 0 ? -2 : -1;
  if (in.compare(at, token.size(), token) != 0) return -1;
  at += token.size();
  if (need(4)) return -2;
  if (get_u32(in, at) != prefix.size()) return -1;
  at += 4;
  if (need(prefix.size() + 4)) return -2;
  if (in.compare(at, prefix.size(), prefix) != 0) return -1;
  const uint32_t who = get_u32(in, at + prefix.size());
  if (in.size() != at + prefix.size() + 4) return -1;  // nothing may follow before our answer
  return int(who) > me && int(who) < n ? int(who) : -1;
}

}  // namespace

struct PeerLinks::Peer {
  struct Item {
    const char* p;
    size_t n;
    Deadline d;
    std::shared_ptr<const std::string> op;
    Done done;
  };
  Socket sock;
  int index = -1;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> queue;
  bool busy = false;  // an item is being sent
  bool stop = false;
  bool failed = false;
  ErrorKind err_kind = ErrorKind::Runtime;
  std::string err;
  std::thread thread;
};

IoContext PeerLinks::ctx(int peer, const char* dir, const std::string& op) const {
  return IoContext{op.c_str(), {}, members_[size_t(me_)], dir, members_[size_t(peer)]};
}

PeerLinks::PeerLinks(StoreClient& store, const std::string& prefix, int me, std::vector<int> members, const std::string& token,
           double timeout_s)
    : me_(me), members_(std::move(members)), timeout_s_(timeout_s) {
  const int n = size();
  peers_.resize(size_t(n));
  for (int i = 0; i < n; ++i) {
    peers_[size_t(i)] = std::make_unique<Peer>();
    peers_[size_t(i)]->index = i;
  }
  const Deadline d = deadline_after(timeout_s);
  const int grank = members_[size_t(me)];
  const std::string bind = mesh_bind_address(store);
  Listener listener(bind, 0);
  const std::string published = bind == "0.0.0.0" ? store.local_address() : bind;
  store.set(prefix + "/addr/" + std::to_string(me), published + ":" + std::to_string(listener.port()));

  // Connect to every lower member.
  for (int j = 0; j < me; ++j) {
    std::string addr = store.get(prefix + "/addr/" + std::to_string(j), timeout_s);
    auto colon = addr.rfind(':');
    IoContext c{"connect", str_cat("to peer rank ", members_[size_t(j)], " at ", addr), grank};
    Socket s = Socket::connect(addr.substr(0, colon), std::stoi(addr.substr(colon + 1)), d, c);
    std::string hello;
    put_u32(hello, kMeshMagic);
    put_u32(hello, uint32_t(token.size()));
    hello += token;
    put_u32(hello, uint32_t(prefix.size()));
    hello += prefix;
    put_u32(hello, uint32_t(me));
    s.send_all(hello.data(), hello.size(), d, c);
    char ok = 0;
    s.recv_all(&ok, 1, d, c);
    RL_CHECK(ok == 1, Runtime, "ringloom.distributed: peer rank ", members_[size_t(j)], " refused rank ", grank);
    peers_[size_t(j)]->sock = std::move(s);
  }
  accept_higher(listener, prefix, token, d);
  for (int i = 0; i < n; ++i) {
    if (i == me) continue;
    Peer& p = *peers_[size_t(i)];
    p.thread = std::thread([this, &p] { sender_loop(p); });
  }
}

// Accepts every higher member. Handshakes run side by side (one poll over the listener and
// every pending connection), each with its own short deadline, so silent or slow
// connections from anywhere can neither delay the members' handshakes nor break set-up;
// anything that is not a member of this job and group (wrong token, wrong group,
// garbage, a duplicate) is answered 0 and dropped.
void PeerLinks::accept_higher(Listener& listener, const std::string& prefix, const std::string& token, Deadline d) {
  const int n = size(), grank = members_[size_t(me_)];
  int missing = n - 1 - me_;
  std::deque<Pending> pending;
  std::vector<pollfd> fds;
  while (missing > 0) {
    IoContext c{"rendezvous", str_cat("waiting for ", missing, " higher rank(s) of group '", prefix, "'"), grank};
    if (Clock::now() >= d)
      fail(ErrorKind::Timeout, "ringloom.distributed: rendezvous on rank ", grank, " (", c.detail,
           "): timed out waiting for peers to connect");
    fds.assign(1, pollfd{listener.fd(), POLLIN, 0});
    Deadline next = d;
    for (Pending& p : pending) {
      fds.push_back({p.sock.fd(), POLLIN, 0});
      next = std::min(next, p.until);
    }
    if (::poll(fds.data(), fds.size(), ms_left(next)) < 0 && errno != EINTR)
      fail(ErrorKind::Runtime, "ringloom.distributed: rendezvous on rank ", grank, ": poll failed: ",
           std::strerror(errno));
    for (size_t i = 0; i < pending.size(); ++i) {
      Pending& p = pending[i];
      if (!(fds[i + 1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[512];
      const size_t want = std::min(sizeof buf, 16 + token.size() + prefix.size() - p.in.size());
      const ssize_t k = want ? ::recv(p.sock.fd(), buf, want, MSG_DONTWAIT) : 0;
      if (k <= 0) {
        if (k < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        p.sock.close();  // closed, failed, or sent more than a handshake holds
        continue;
      }
      p.in.append(buf, size_t(k));
      const int who = judge_hello(p.in, token, prefix, me_, n);
      if (who == -2) continue;
      const bool good = who >= 0 && !peers_[size_t(who)]->sock.valid();
      const char ok = good ? 1 : 0;
      try {
        p.sock.send_all(&ok, 1, std::min(d, deadline_after(kHandshakeSeconds)), c);
      } catch (const Error&) {
        p.sock.close();
        continue;
      }
      if (good) {
        peers_[size_t(who)]->sock = std::move(p.sock);
        --missing;
      }
      p.sock.close();
    }
    const Deadline now = Clock::now();
    for (Pending& p : pending)
      if (now >= p.until) p.sock.close();
    pending.erase(std::remove_if(pending.begin(), pending.end(), [](const Pending& p) { return !p.sock.valid(); }),
                  pending.end());
    if (fds[0].revents & POLLIN) {
      try {
        Socket s = listener.accept(now, c);  // ready: does not wait
        if (pending.size() >= kMaxPendingHandshakes) pending.pop_front();  // the oldest stranger goes
        pending.push_back({std::move(s), {}, std::min(d, deadline_after(kHandshakeSeconds))});
      } catch (const Error&) {
        // EMFILE and the like: keep the members already pending, retry after a pause.
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }
}

PeerLinks::~PeerLinks() {
  for (auto& pp : peers_) {
    {
      std::lock_guard<std::mutex> l(pp->mu);
      pp->stop = true;
    }
    pp->cv.notify_all();
    pp->sock.shutdown();
  }
  for (auto& pp : peers_)
    if (pp->thread.joinable()) pp->thread.join();
}

void PeerLinks::sender_loop(Peer& p) {
  std::unique_lock<std::mutex> l(p.mu);
  for (;;) {
    p.cv.wait(l, [&] { return p.stop || !p.queue.empty(); });
    if (p.stop) return;
    Peer::Item it = std::move(p.queue.front());
    p.queue.pop_front();
    p.busy = true;
    l.unlock();
    std::exception_ptr err;
    try {
      p.sock.send_all(it.p, it.n, it.d, ctx(p.index, "sending to", *it.op));
    } catch (const Error& e) {
      err = std::current_exception();
      std::lock_guard<std::mutex> g(p.mu);
      if (!p.failed) {
        p.failed = true;
        p.err_kind = e.kind();
        p.err = e.what();
      }
    }
    if (it.done) it.done(err);
    l.lock();
    p.busy = false;
    if (p.failed) {
      // Nothing queued behind a failed send can be delivered: fail it too.
      for (auto& rest : p.queue)
        if (rest.done) rest.done(std::make_exception_ptr(Error(p.err_kind, p.err)));
      p.queue.clear();
    }
    p.cv.notify_all();
  }
}

void PeerLinks::send(int peer, const void* data, size_t n, Deadline d, Done done) {
  if (n == 0) {
    if (done) done(nullptr);
    return;
  }
  Peer& p = *peers_[size_t(peer)];
  {
    std::lock_guard<std::mutex> l(p.mu);
    if (p.failed) throw Error(p.err_kind, p.err);
    p.queue.push_back({static_cast<const char*>(data), n, d, op_, std::move(done)});
  }
  p.cv.notify_all();
}

void PeerLinks::recv(int peer, void* data, size_t n, Deadline d) {
  if (n == 0) return;
  peers_[size_t(peer)]->sock.recv_all(data, n, d, ctx(peer, "receiving from", *op_));
}

void PeerLinks::flush(Deadline d) {
  for (auto& pp : peers_) {
    Peer& p = *pp;
    if (!p.sock.valid()) continue;
    std::unique_lock<std::mutex> l(p.mu);
    // The sender itself gives up at the item's deadline; the extra second covers wake-up.
    bool done = p.cv.wait_until(l, d + std::chrono::seconds(1),
                                [&] { return p.failed || (p.queue.empty() && !p.busy); });
    if (p.failed) throw Error(p.err_kind, p.err);
    if (!done) {
      IoContext c = ctx(p.index, "sending to", *op_);
      fail(ErrorKind::Timeout, "ringloom.distributed: ", c.what, " on rank ", c.rank, " (", c.dir, " peer rank ",
           c.peer, "): timed out waiting for the send to complete");
    }
  }
}

void PeerLinks::abort() {
  for (auto& pp : peers_) pp->sock.shutdown();
}

}  // namespace ringloom::comm
