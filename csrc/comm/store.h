// The rendezvous store: a TCP key-value server on rank 0 (bound to MASTER_ADDR:MASTER_PORT)
// and a client in every rank. Ranks publish their addresses and wait for each other's
// through it; it is not on any data path.
//
// Wire format (all integers little-endian). Every message is a frame:
//   u32 length L (L <= kMaxFrame) | L bytes of payload
// A request payload is   u8 op | u32 key length K (K <= kMaxKey) | K key bytes | op arguments
// and a response payload u8 status (OK, ERROR, TIMEOUT) | data (a value or a message).
//   HELLO  key = the job token              -> OK, or ERROR and the connection is closed
//   SET    value = the rest of the payload  -> OK
//   GET    u32 timeout_ms                   -> OK value once the key exists, or TIMEOUT
//   WAIT   u32 timeout_ms                   -> OK once the key exists, or TIMEOUT
//   ADD    i64 delta                        -> OK i64 new value (a missing key counts as 0)
//   CHECK  (nothing)                        -> OK u8 1 if the key exists, else 0
//   DELETE (nothing)                        -> OK u8 1 if the key existed, else 0
// The first request on a connection must be HELLO with the right token. A frame that is
// too long, truncated inside, of an unknown op, or sent before the handshake gets an
// ERROR response and the connection is closed; the server itself carries on. Waits are
// timed on the server (it answers TIMEOUT), so one stuck client never blocks others.
//
// Before the handshake a connection may send at most one frame of kMaxHelloFrame bytes
// (what a HELLO with the longest token needs), and must complete it within
// RINGLOOM_STORE_AUTH_TIMEOUT seconds (default kAuthSeconds) of connecting; otherwise it
// is closed. So a stranger costs at most a few KiB and a file
// descriptor for a few seconds, never a 16 MiB buffer. When accept() fails (file
// descriptors exhausted) the server stops accepting for kAcceptBackoffMs instead of
// spinning on a listener that stays readable.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/socket.h"

namespace ringloom::comm {

constexpr uint32_t kMaxFrame = 16u << 20;
constexpr uint32_t kMaxKey = 4096;
constexpr uint32_t kMaxHelloFrame = 5 + kMaxKey;
constexpr double kAuthSeconds = 10.0;
constexpr int kAcceptBackoffMs = 100;

enum class StoreOp : uint8_t { Hello = 0, Set = 1, Get = 2, Wait = 3, Add = 4, Check = 5, Delete = 6 };
enum class StoreStatus : uint8_t { Ok = 0, Error = 1, Timeout = 2 };

// Runs the server loop on a background thread until destroyed.
class StoreServer {
 public:
  StoreServer(const std::string& host, int port, std::string token);
  ~StoreServer();
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;
  int port() const { return listener_.port(); }

 private:
  void loop();
  Listener listener_;
  std::string token_;
  double auth_s_;  // how long a connection may stay unauthenticated
  int wake_[2] = {-1, -1};  // a pipe: writing to it ends the loop
  std::thread thread_;
};

// One connection to the store. Calls are serialised (safe from several threads).
class StoreClient {
 public:
  StoreClient(const std::string& host, int port, const std::string& token, int rank, double timeout_s);

  void set(const std::string& key, const std::string& value);
  std::string get(const std::string& key, double timeout_s);   // waits for the key
  void wait(const std::vector<std::string>& keys, double timeout_s);
  int64_t add(const std::string& key, int64_t delta);
  bool check(const std::vector<std::string>& keys);
  bool remove(const std::string& key);

  int rank() const { return rank_; }
  double timeout() const { return timeout_s_; }
  // This host's address as the store's host sees it: what peers should connect to.
  std::string local_address() const { return sock_.local_address(); }

 private:
  // Sends one request and returns the response's status and data.
  std::pair<StoreStatus, std::string> call(StoreOp op, const std::string& key, const std::string& args,
                                           double wait_s, const char* opname);
  std::mutex mu_;
  Socket sock_;
  int rank_;
  double timeout_s_;
  bool broken_ = false;
  std::string broken_reason_;
};

}  // namespace ringloom::comm
