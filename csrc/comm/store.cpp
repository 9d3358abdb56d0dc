#include "comm/store.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <list>
#include <unordered_map>

#include "core/error.h"

namespace ringloom::comm {

namespace {

constexpr size_t kMaxConnections = 4096;

void put_u32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(char((v >> (8 * i)) & 0xFF));
}
void put_i64(std::string& s, int64_t v) {
  uint64_t u = uint64_t(v);
  for (int i = 0; i < 8; ++i) s.push_back(char((u >> (8 * i)) & 0xFF));
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(uint8_t(p[i])) << (8 * i);
  return v;
}
int64_t get_i64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(uint8_t(p[i])) << (8 * i);
  return int64_t(v);
}

std::string frame(StoreStatus st, const std::string& data) {
  std::string f;
  put_u32(f, uint32_t(1 + data.size()));
  f.push_back(char(st));
  f += data;
  return f;
}

// One client connection on the server side.
struct Conn {
  Socket sock;
  std::string in, out;
  bool authed = false;
  Deadline auth_deadline;  // closed if still unauthenticated then
  bool closing = false;  // close once `out` is flushed
  bool waiting = false;  // a GET or WAIT waits for `wkey` until `wdeadline`
  StoreOp wop = StoreOp::Wait;
  std::string wkey;
  Deadline wdeadline;
};

class ServerState {
 public:
  explicit ServerState(const std::string& token) : token_(token) {}
  std::unordered_map<std::string, std::string> kv;

  // Consumes every complete frame in c.in (stops at a wait or an error).
  void process(Conn& c) {
    while (!c.closing && !c.waiting && c.in.size() >= 4) {
      uint32_t len = get_u32(c.in.data());
      const uint32_t limit = c.authed ? kMaxFrame : kMaxHelloFrame;
      if (len == 0 || len > limit) {
        reject(c, str_cat("frame length ", len, " is outside [1, ", limit, "]",
                          c.authed ? "" : " before the HELLO handshake"));
        return;
      }
      if (c.in.size() < 4 + size_t(len)) return;
      std::string payload = c.in.substr(4, len);
      c.in.erase(0, 4 + size_t(len));
      handle(c, payload);
    }
  }

  // Answers waits whose key now exists or whose deadline passed; returns the next deadline.
  void settle(std::list<Conn>& conns, Deadline now) {
    for (Conn& c : conns) {
      if (!c.waiting) continue;
      auto it = kv.find(c.wkey);
      if (it != kv.end()) {
        c.waiting = false;
        c.out += frame(StoreStatus::Ok, c.wop == StoreOp::Get ? it->second : std::string());
        process(c);
      } else if (now >= c.wdeadline) {
        c.waiting = false;
        c.out += frame(StoreStatus::Timeout, "");
        process(c);
      }
    }
  }

 private:
  void reject(Conn& c, const std::string& why) {
    c.out += frame(StoreStatus::Error, "ringloom store: " + why);
    c.closing = true;
    c.in.clear();
  }

  void handle(Conn& c, const std::string& p) {
    if (p.size() < 5) return reject(c, "truncated request header");
    StoreOp op = StoreOp(uint8_t(p[0]));
    uint32_t klen = get_u32(p.data() + 1);
    if (klen > kMaxKey) return reject(c, str_cat("key of ", klen, " bytes exceeds the limit of ", kMaxKey));
    if (p.size() < 5 + size_t(klen)) return reject(c, "key runs past the end of the frame");
    std::string key = p.substr(5, klen);
    std::string args = p.substr(5 + klen);
    if (!c.authed) {
      if (op != StoreOp::Hello) return reject(c, "the first request must be the HELLO handshake");
      if (key != token_) return reject(c, "wrong job token: this store belongs to another job");
      c.authed = true;
      c.out += frame(StoreStatus::Ok, "");
      return;
    }
    switch (op) {
      case StoreOp::Hello:
        c.out += frame(StoreStatus::Ok, "");
        return;
      case StoreOp::Set:
        kv[key] = args;
        c.out += frame(StoreStatus::Ok, "");
        return;
      case StoreOp::Get:
      case StoreOp::Wait: {
        if (args.size() != 4) return reject(c, "GET/WAIT takes a u32 timeout");
        auto it = kv.find(key);
        if (it != kv.end()) {
          c.out += frame(StoreStatus::Ok, op == StoreOp::Get ? it->second : std::string());
          return;
        }
        c.waiting = true;
        c.wop = op;
        c.wkey = key;
        c.wdeadline = Clock::now() + std::chrono::milliseconds(get_u32(args.data()));
        return;
      }
      case StoreOp::Add: {
        if (args.size() != 8) return reject(c, "ADD takes an i64 delta");
        auto it = kv.find(key);
        int64_t v = 0;
        if (it != kv.end()) {
          if (it->second.size() != 8)
            return reject(c, str_cat("ADD on key '", key, "' which holds a non-counter value"));
          v = get_i64(it->second.data());
        }
        // Wrapping add: a counter never triggers signed-overflow UB whatever a client sends.
        v = int64_t(uint64_t(v) + uint64_t(get_i64(args.data())));
        std::string enc;
        put_i64(enc, v);
        kv[key] = enc;
        c.out += frame(StoreStatus::Ok, enc);
        return;
      }
      case StoreOp::Check:
        c.out += frame(StoreStatus::Ok, std::string(1, kv.count(key) ? '\1' : '\0'));
        return;
      case StoreOp::Delete:
        c.out += frame(StoreStatus::Ok, std::string(1, kv.erase(key) ? '\1' : '\0'));
        return;
    }
    reject(c, str_cat("unknown op ", int(uint8_t(p[0]))));
  }

  std::string token_;
};

}  // namespace

namespace {
double auth_timeout() {
  const char* e = std::getenv("RINGLOOM_STORE_AUTH_TIMEOUT");
  if (!e || !*e) return kAuthSeconds;
  char* end = nullptr;
  const double v = std::strtod(e, &end);
  RL_CHECK(end && *end == '\0' && std::isfinite(v) && v > 0 && v <= 86400, Value,
           "ringloom store: RINGLOOM_STORE_AUTH_TIMEOUT must be a number of seconds in (0, 86400], got '", e, "'");
  return v;
}
}  // namespace

StoreServer::StoreServer(const std::string& host, int port, std::string token)
    : listener_(host, port), token_(std::move(token)), auth_s_(auth_timeout()) {
  RL_CHECK(::pipe2(wake_, O_CLOEXEC) == 0, Runtime, "ringloom store: pipe failed: ", std::strerror(errno));
  thread_ = std::thread([this] { loop(); });
}

StoreServer::~StoreServer() {
  char b = 1;
  (void)!::write(wake_[1], &b, 1);
  if (thread_.joinable()) thread_.join();
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void StoreServer::loop() {
  ServerState st(token_);
  std::list<Conn> conns;
  std::vector<pollfd> fds;
  std::vector<Conn*> order;
  std::vector<char> buf(1 << 16);
  Deadline accept_resume = Clock::now();  // accept() failed: leave the listener alone until then
  for (;;) {
    fds.clear();
    order.clear();
    const Deadline now0 = Clock::now();
    const bool accepting = conns.size() < kMaxConnections && now0 >= accept_resume;
    fds.push_back({wake_[0], POLLIN, 0});
    fds.push_back({listener_.fd(), short(accepting ? POLLIN : 0), 0});
    Deadline next = now0 + std::chrono::seconds(3600);
    if (!accepting && conns.size() < kMaxConnections) next = std::min(next, accept_resume);
    for (Conn& c : conns) {
      short ev = c.closing ? 0 : POLLIN;  // a closing connection only flushes its answer
      if (!c.out.empty()) ev |= POLLOUT;
      fds.push_back({c.sock.fd(), ev, 0});
      order.push_back(&c);
      if (c.waiting) next = std::min(next, c.wdeadline);
      if (!c.authed && !c.closing) next = std::min(next, c.auth_deadline);
    }
    int r = ::poll(fds.data(), fds.size(), ms_left(next));
    if (r < 0 && errno != EINTR) return;  // cannot happen with valid fds; never abort
    if (fds[0].revents) return;
    if (fds[1].revents & POLLIN) {
      for (;;) {
        int fd = ::accept4(listener_.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
          // EMFILE/ENFILE/ENOBUFS: the pending connection stays queued and the listener
          // readable; polling it again at once would spin this thread at full speed.
          if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
            accept_resume = Clock::now() + std::chrono::milliseconds(kAcceptBackoffMs);
          break;
        }
        conns.emplace_back();
        conns.back().sock = Socket(fd);
        conns.back().auth_deadline = deadline_after(auth_s_);
        if (conns.size() >= kMaxConnections) break;
      }
    }
    for (size_t i = 0; i < order.size(); ++i) {
      Conn& c = *order[i];
      short re = fds[i + 2].revents;
      if (re & (POLLIN | POLLHUP | POLLERR)) {
        bool eof = false;
        for (;;) {
          ssize_t k = ::recv(c.sock.fd(), buf.data(), buf.size(), MSG_DONTWAIT);
          if (k > 0) {
            if (!c.closing) c.in.append(buf.data(), size_t(k));
            // Answer complete frames as they arrive, so an unauthenticated peer is judged
            // on its first frame header, before anything more of it is buffered.
            st.process(c);
            // A waiting client should not be sending; bound what it may queue meanwhile.
            const size_t cap = c.authed ? 2 * (size_t(kMaxFrame) + 4) : size_t(kMaxHelloFrame) + 4;
            if (c.in.size() > cap) {
              c.sock.close();
              break;
            }
            if (c.closing) break;
            continue;
          }
          if (k == 0) eof = true;
          else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) c.sock.close();
          break;
        }
        if (c.sock.valid()) st.process(c);
        // The peer closed its side: answer what it sent (an error, say), then close.
        if (eof) {
          c.closing = true;
          c.waiting = false;
        }
      }
      if (c.sock.valid() && !c.out.empty()) {
        ssize_t k = ::send(c.sock.fd(), c.out.data(), c.out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0) c.out.erase(0, size_t(k));
        else if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) c.sock.close();
      }
      if (c.closing && c.out.empty()) c.sock.close();
    }
    const Deadline now = Clock::now();
    for (Conn& c : conns)
      if (c.sock.valid() && !c.authed && !c.closing && now >= c.auth_deadline) c.sock.close();
    st.settle(conns, now);
    // Flush what settling produced right away (poll will catch the rest).
    for (Conn& c : conns) {
      if (c.sock.valid() && !c.out.empty()) {
        ssize_t k = ::send(c.sock.fd(), c.out.data(), c.out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0) c.out.erase(0, size_t(k));
      }
      if (c.closing && c.out.empty()) c.sock.close();
    }
    conns.remove_if([](const Conn& c) { return !c.sock.valid(); });
  }
}

// ---- client ----

StoreClient::StoreClient(const std::string& host, int port, const std::string& token, int rank, double timeout_s)
    : rank_(rank), timeout_s_(timeout_s) {
  sock_ = Socket::connect(host, port, deadline_after(timeout_s),
                          IoContext{"store connect", str_cat("master ", host, ":", port), rank});
  auto [st, msg] = call(StoreOp::Hello, token, "", 0, "handshake");
  RL_CHECK(st == StoreStatus::Ok, Runtime, "ringloom.distributed: the store at ", host, ":", port,
           " refused rank ", rank, ": ", msg);
}

std::pair<StoreStatus, std::string> StoreClient::call(StoreOp op, const std::string& key, const std::string& args,
                                                      double wait_s, const char* opname) {
  std::lock_guard<std::mutex> lock(mu_);
  RL_CHECK(!broken_, Runtime, "ringloom.distributed: store ", opname, " on rank ", rank_,
           ": the connection to the store is unusable after an earlier error: ", broken_reason_);
  RL_CHECK(key.size() <= kMaxKey, Value, "ringloom.distributed: store ", opname, ": key of ", key.size(),
           " bytes exceeds the limit of ", kMaxKey);
  RL_CHECK(5 + key.size() + args.size() <= kMaxFrame, Value, "ringloom.distributed: store ", opname, " key '", key,
           "': value of ", args.size(), " bytes exceeds the frame limit of ", kMaxFrame);
  std::string f;
  put_u32(f, uint32_t(5 + key.size() + args.size()));
  f.push_back(char(op));
  put_u32(f, uint32_t(key.size()));
  f += key;
  f += args;
  // The server answers a wait by its deadline; allow the transport a margin beyond it.
  Deadline d = deadline_after(wait_s + timeout_s_);
  IoContext ctx{"store", str_cat(opname, " key '", op == StoreOp::Hello ? "<token>" : key, "'"), rank_};
  try {
    sock_.send_all(f.data(), f.size(), d, ctx);
    char hdr[4];
    sock_.recv_all(hdr, 4, d, ctx);
    uint32_t len = get_u32(hdr);
    RL_CHECK(len >= 1 && len <= kMaxFrame, Runtime, "ringloom.distributed: store ", opname,
             ": malformed response of length ", len);
    std::string body(len, '\0');
    sock_.recv_all(body.data(), len, d, ctx);
    StoreStatus st = StoreStatus(uint8_t(body[0]));
    if (st == StoreStatus::Error) {  // the server closes the connection after an ERROR
      broken_ = true;
      broken_reason_ = body.substr(1);
    }
    return {st, body.substr(1)};
  } catch (const Error& e) {
    // A partial exchange leaves the stream out of step: refuse further use with the cause.
    broken_ = true;
    broken_reason_ = e.what();
    throw;
  }
}

namespace {
std::string timeout_arg(double s) {
  double ms = std::max(0.0, std::min(s * 1000.0, 4.0e9));
  std::string a;
  put_u32(a, uint32_t(ms));
  return a;
}
}  // namespace

void StoreClient::set(const std::string& key, const std::string& value) {
  auto [st, msg] = call(StoreOp::Set, key, value, 0, "set");
  RL_CHECK(st == StoreStatus::Ok, Runtime, "ringloom.distributed: store set key '", key, "' on rank ", rank_, ": ", msg);
}

std::string StoreClient::get(const std::string& key, double timeout_s) {
  auto [st, v] = call(StoreOp::Get, key, timeout_arg(timeout_s), timeout_s, "get");
  RL_CHECK(st != StoreStatus::Timeout, Timeout, "ringloom.distributed: store get key '", key, "' on rank ", rank_,
           " timed out after ", timeout_s, " s (no rank set it; did one fail to start?)");
  RL_CHECK(st == StoreStatus::Ok, Runtime, "ringloom.distributed: store get key '", key, "' on rank ", rank_, ": ", v);
  return v;
}

void StoreClient::wait(const std::vector<std::string>& keys, double timeout_s) {
  Deadline d = deadline_after(timeout_s);
  for (const auto& key : keys) {
    double left = std::chrono::duration<double>(d - Clock::now()).count();
    auto [st, v] = call(StoreOp::Wait, key, timeout_arg(std::max(left, 0.0)), std::max(left, 0.0), "wait");
    RL_CHECK(st != StoreStatus::Timeout, Timeout, "ringloom.distributed: store wait for key '", key, "' on rank ",
             rank_, " timed out after ", timeout_s, " s");
    RL_CHECK(st == StoreStatus::Ok, Runtime, "ringloom.distributed: store wait key '", key, "' on rank ", rank_, ": ", v);
  }
}

int64_t StoreClient::add(const std::string& key, int64_t delta) {
  std::string a;
  put_i64(a, delta);
  auto [st, v] = call(StoreOp::Add, key, a, 0, "add");
  RL_CHECK(st == StoreStatus::Ok && v.size() == 8, Runtime, "ringloom.distributed: store add key '", key, "' on rank ",
           rank_, ": ", v);
  return get_i64(v.data());
}

bool StoreClient::check(const std::vector<std::string>& keys) {
  for (const auto& key : keys) {
    auto [st, v] = call(StoreOp::Check, key, "", 0, "check");
    RL_CHECK(st == StoreStatus::Ok && v.size() == 1, Runtime, "ringloom.distributed: store check key '", key,
             "' on rank ", rank_, ": ", v);
    if (v[0] == 0) return false;
  }
  return true;
}

bool StoreClient::remove(const std::string& key) {
  auto [st, v] = call(StoreOp::Delete, key, "", 0, "delete");
  RL_CHECK(st == StoreStatus::Ok && v.size() == 1, Runtime, "ringloom.distributed: store delete key '", key,
           "' on rank ", rank_, ": ", v);
  return v[0] != 0;
}

}  // namespace ringloom::comm
