#include "comm/peer_links.h"

#include <cstring>

#include "core/error.h"

namespace ringloom::comm {

namespace {

constexpr uint32_t kMeshMagic = 0x524C4D48;  // "RLMH"

void put_u32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(char((v >> (8 * i)) & 0xFF));
}
uint32_t read_u32(Socket& s, Deadline d, const IoContext& c) {
  unsigned char b[4];
  s.recv_all(b, 4, d, c);
  return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
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
  Listener listener("0.0.0.0", 0);
  store.set(prefix + "/addr/" + std::to_string(me), store.local_address() + ":" + std::to_string(listener.port()));

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
  // Accept every higher member; anything else (wrong token, wrong group, garbage) is dropped.
  int missing = n - 1 - me;
  while (missing > 0) {
    IoContext c{"rendezvous", str_cat("waiting for ", missing, " higher rank(s) of group '", prefix, "'"), grank};
    Socket s = listener.accept(d, c);
    try {
      // A short deadline per handshake: a silent stray connection must not stall setup.
      Deadline hd = std::min(d, deadline_after(5.0));
      if (read_u32(s, hd, c) != kMeshMagic) continue;
      uint32_t tl = read_u32(s, hd, c);
      if (tl > kMaxKey) continue;
      std::string tok(tl, '\0');
      s.recv_all(tok.data(), tl, hd, c);
      uint32_t pl = read_u32(s, hd, c);
      if (pl > kMaxKey) continue;
      std::string pre(pl, '\0');
      s.recv_all(pre.data(), pl, hd, c);
      uint32_t who = read_u32(s, hd, c);
      bool good = tok == token && pre == prefix && int(who) > me && int(who) < n && !peers_[who]->sock.valid();
      char ok = good ? 1 : 0;
      s.send_all(&ok, 1, hd, c);
      if (!good) continue;
      peers_[who]->sock = std::move(s);
      --missing;
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::Timeout && Clock::now() >= d) throw;
      // A broken or slow handshake from a stranger: drop it and keep listening.
    }
  }
  for (int i = 0; i < n; ++i) {
    if (i == me) continue;
    Peer& p = *peers_[size_t(i)];
    p.thread = std::thread([this, &p] { sender_loop(p); });
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
