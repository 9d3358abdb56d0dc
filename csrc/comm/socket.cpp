#include "comm/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <thread>

#include "core/error.h"

namespace ringloom::comm {

namespace {

std::string where(const IoContext& c) {
  std::string s = c.what;
  if (c.rank >= 0) s += str_cat(" on rank ", c.rank);
  if (!c.detail.empty()) s += " (" + c.detail + ")";
  if (c.dir) s += str_cat(" (", c.dir, " peer rank ", c.peer, ")");
  return s;
}

[[noreturn]] void fail_closed(const IoContext& c) {
  fail(ErrorKind::Runtime, "ringloom.distributed: ", where(c),
       ": the connection was closed by the other side (that process died, or failed itself and shut its connections)");
}

[[noreturn]] void fail_errno(const IoContext& c, const char* call, int err) {
  if (err == ECONNRESET || err == EPIPE) fail_closed(c);
  fail(ErrorKind::Runtime, "ringloom.distributed: ", where(c), ": ", call, " failed: ", std::strerror(err));
}

[[noreturn]] void fail_timeout(const IoContext& c, const char* dir) {
  fail(ErrorKind::Timeout, "ringloom.distributed: ", where(c), ": timed out waiting to ", dir,
       " (the peer is stuck or gone; raise the timeout if it is just slow)");
}

// Waits until fd is ready for `events` or the deadline passes; false on timeout.
bool wait_ready(int fd, short events, Deadline d, const IoContext& c) {
  for (;;) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, ms_left(d));
    if (r > 0) return true;  // errors/hangup surface in the following send/recv
    if (r == 0) {
      if (Clock::now() >= d) return false;
      continue;
    }
    if (errno != EINTR) fail_errno(c, "poll", errno);
  }
}

}  // namespace

int ms_left(Deadline d) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d - Clock::now()).count();
  if (ms <= 0) return 0;
  return ms > INT_MAX ? INT_MAX : int(ms) + 1;  // +1: never wake just before the deadline
}

void set_nonblocking(int fd) {
  int fl = ::fcntl(fd, F_GETFL, 0);
  ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

void tune_for_bulk(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int buf = 4 << 20;  // the kernel caps this at net.core.[rw]mem_max
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
}

Socket& Socket::operator=(Socket&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void Socket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void Socket::shutdown() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

void Socket::send_all(const void* p, size_t n, Deadline d, const IoContext& c) {
  const char* b = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t k = ::send(fd_, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k > 0) {
      b += k;
      n -= size_t(k);
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_ready(fd_, POLLOUT, d, c)) fail_timeout(c, "send");
      continue;
    }
    fail_errno(c, "send", k < 0 ? errno : EPIPE);
  }
}

void Socket::recv_all(void* p, size_t n, Deadline d, const IoContext& c) {
  char* b = static_cast<char*>(p);
  while (n > 0) {
    ssize_t k = ::recv(fd_, b, n, MSG_DONTWAIT);
    if (k > 0) {
      b += k;
      n -= size_t(k);
      continue;
    }
    if (k == 0) fail_closed(c);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_ready(fd_, POLLIN, d, c)) fail_timeout(c, "receive");
      continue;
    }
    fail_errno(c, "recv", errno);
  }
}

Socket Socket::connect(const std::string& host, int port, Deadline d, const IoContext& c) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  std::string last = "no attempt";
  auto backoff = std::chrono::milliseconds(10);
  for (;;) {
    int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (rc != 0) {
      last = str_cat("cannot resolve '", host, "': ", gai_strerror(rc));
    } else {
      for (addrinfo* a = res; a; a = a->ai_next) {
        int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        Socket s(fd);
        set_nonblocking(fd);
        int r = ::connect(fd, a->ai_addr, a->ai_addrlen);
        if (r < 0 && errno == EINPROGRESS) {
          pollfd p{fd, POLLOUT, 0};
          int w = ::poll(&p, 1, std::min(ms_left(d), 1000));
          int err = 0;
          socklen_t len = sizeof err;
          if (w > 0 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) r = 0;
          else errno = w == 0 ? ETIMEDOUT : (err ? err : errno);
        }
        if (r == 0) {
          ::freeaddrinfo(res);
          tune_for_bulk(fd);
          return s;
        }
        last = std::strerror(errno);
      }
      ::freeaddrinfo(res);
      res = nullptr;
    }
    if (Clock::now() >= d)
      fail(ErrorKind::Timeout, "ringloom.distributed: ", where(c), ": could not connect to ", host, ":", port,
           " before the timeout (last error: ", last, ")");
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, std::max<Clock::duration>(d - Clock::now(), {})));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
  }
}

std::string Socket::local_address() const {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) return "127.0.0.1";
  char buf[INET_ADDRSTRLEN] = {0};
  ::inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf);
  return buf;
}

Listener::Listener(const std::string& host, int port, int backlog) {
  IoContext c{"listen", str_cat(host, ":", port)};
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail_errno(c, "socket", errno);
  sock_ = Socket(fd);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  if (host.empty() || host == "0.0.0.0" || host == "*") {
    a.sin_addr.s_addr = htonl(INADDR_ANY);
  } else if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    RL_CHECK(::getaddrinfo(host.c_str(), nullptr, &hints, &res) == 0 && res, Value,
             "ringloom.distributed: cannot resolve the address to listen on: '", host, "'");
    a.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
    ::freeaddrinfo(res);
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int e = errno;
    fail(ErrorKind::Runtime, "ringloom.distributed: cannot listen on ", host, ":", port, ": ", std::strerror(e),
         e == EADDRINUSE ? " (is another job using MASTER_PORT?)" : "");
  }
  if (::listen(fd, backlog) != 0) fail_errno(c, "listen", errno);
  set_nonblocking(fd);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
}

Socket Listener::accept(Deadline d, const IoContext& c) {
  for (;;) {
    int fd = ::accept4(sock_.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      tune_for_bulk(fd);
      return Socket(fd);
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) fail_errno(c, "accept", errno);
    if (!wait_ready(sock_.fd(), POLLIN, d, c))
      fail(ErrorKind::Timeout, "ringloom.distributed: ", where(c), ": timed out waiting for peers to connect");
  }
}

}  // namespace ringloom::comm
