// TCP sockets with deadlines. Every blocking operation here waits with poll() until a
// deadline, so a stuck or dead peer turns into an exception instead of a hang: EOF or a
// reset means the peer closed (usually: died), running past the deadline means it is stuck.
// Sockets are non-blocking; send uses MSG_NOSIGNAL so a dead peer never raises SIGPIPE.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace ringloom::comm {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

inline Deadline deadline_after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}
// Milliseconds left until `d` for poll(), clamped to [0, INT_MAX].
int ms_left(Deadline d);

// What the thrown error says about the operation: "store get key 'x' on rank 2",
// "all_reduce (ring) on rank 0 from peer rank 3". Built lazily only when something fails.
// Cheap to build (no allocation on the send/recv hot path): the text is only assembled when
// something fails.
struct IoContext {
  const char* what;      // the operation, e.g. "all_reduce"
  std::string detail;    // e.g. "key 'addr/1'"
  int rank = -1;         // this process's rank
  const char* dir = nullptr;  // "receiving from" / "sending to" a peer ...
  int peer = -1;              // ... of this rank
};

// A connected TCP socket owning its file descriptor.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() { close(); }

  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void close();
  void shutdown();  // wakes up anyone blocked on this socket (they then see EOF)

  // Sends or receives exactly n bytes before the deadline; throws ringloom::Error
  // (Timeout past the deadline, Runtime when the peer closes or the socket fails).
  void send_all(const void* p, size_t n, Deadline d, const IoContext& ctx);
  void recv_all(void* p, size_t n, Deadline d, const IoContext& ctx);

  // Connects to host:port, retrying refused connections until the deadline (the server
  // may not be up yet).
  static Socket connect(const std::string& host, int port, Deadline d, const IoContext& ctx);
  // The local address of this connected socket, as the peer sees it ("10.0.0.5").
  std::string local_address() const;

 private:
  int fd_ = -1;
};

// A listening socket; bind to port 0 for an ephemeral port.
class Listener {
 public:
  Listener() = default;
  Listener(const std::string& host, int port, int backlog = 128);
  Listener(Listener&&) = default;
  Listener& operator=(Listener&&) = default;
  int port() const { return port_; }
  int fd() const { return sock_.fd(); }
  // Accepts one connection before the deadline.
  Socket accept(Deadline d, const IoContext& ctx);
  void close() { sock_.close(); }

 private:
  Socket sock_;
  int port_ = 0;
};

void set_nonblocking(int fd);
void tune_for_bulk(int fd);  // TCP_NODELAY and larger kernel buffers

}  // namespace ringloom::comm
