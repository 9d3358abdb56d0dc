// Chunked, pipelined ring reduce-scatter / all-gather / all-reduce (see algorithms.h).
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "comm/algorithms.h"

namespace ringloom::comm {

std::vector<size_t> balanced_offsets(size_t count, int n) {
  std::vector<size_t> off(size_t(n) + 1);
  for (int i = 0; i <= n; ++i) off[size_t(i)] = size_t((unsigned __int128)count * unsigned(i) / unsigned(n));
  return off;
}

size_t chunk_elems(size_t esize) {
  static const size_t bytes = [] {
    const char* e = std::getenv("RINGLOOM_COMM_CHUNK_BYTES");
    long long v = e ? std::atoll(e) : 0;
    return v >= 64 ? size_t(v) : size_t(512) << 10;
  }();
  return std::max<size_t>(1, bytes / esize);
}

namespace {

inline int mod(int a, int n) { return ((a % n) + n) % n; }

}  // namespace

// Step s (0 <= s < n-1): send segment me-s-1 to the next rank, receive segment me-s-2 from
// the previous one and reduce it into ours. What is received at step s is exactly what is
// sent at step s+1, so each received chunk is forwarded as soon as it is reduced. After
// n-1 steps segment me-n = me has passed through every rank.
void ring_reduce_scatter(PeerLinks& m, Span buf, const std::vector<size_t>& off, DType wire, ReduceOp op, Deadline d) {
  const int n = m.size(), me = m.me();
  if (n == 1) return;
  const int next = mod(me + 1, n), prev = mod(me - 1, n);
  const size_t ce = chunk_elems(buf.esize);
  std::vector<char> tmp(std::min(ce, off[size_t(n)]) * buf.esize + 1);
  auto seg_ptr = [&](int s) { return buf.data + off[size_t(s)] * buf.esize; };
  auto seg_len = [&](int s) { return off[size_t(s) + 1] - off[size_t(s)]; };

  int out = mod(me - 1, n);
  m.send(next, seg_ptr(out), seg_len(out) * buf.esize, d);
  for (int s = 0; s < n - 1; ++s) {
    const int in = mod(me - s - 2, n);
    char* base = seg_ptr(in);
    const size_t len = seg_len(in);
    for (size_t k = 0; k < len; k += ce) {
      const size_t c = std::min(ce, len - k);
      m.recv(prev, tmp.data(), c * buf.esize, d);
      reduce_into(base + k * buf.esize, tmp.data(), c, wire, op);
      if (s < n - 2) m.send(next, base + k * buf.esize, c * buf.esize, d);
    }
  }
  m.flush(d);
}

// Step s: send segment me-s, receive segment me-s-1 in place and forward it at step s+1.
void ring_all_gather(PeerLinks& m, Span buf, const std::vector<size_t>& off, Deadline d) {
  const int n = m.size(), me = m.me();
  if (n == 1) return;
  const int next = mod(me + 1, n), prev = mod(me - 1, n);
  const size_t ce = chunk_elems(buf.esize);
  auto seg_ptr = [&](int s) { return buf.data + off[size_t(s)] * buf.esize; };
  auto seg_len = [&](int s) { return off[size_t(s) + 1] - off[size_t(s)]; };

  m.send(next, seg_ptr(me), seg_len(me) * buf.esize, d);
  for (int s = 0; s < n - 1; ++s) {
    const int in = mod(me - s - 1, n);
    char* base = seg_ptr(in);
    const size_t len = seg_len(in);
    for (size_t k = 0; k < len; k += ce) {
      const size_t c = std::min(ce, len - k);
      // Safe to overwrite: this segment's data can only arrive here after our own earlier
      // send of it (in the reduce-scatter) has been received downstream.
      m.recv(prev, base + k * buf.esize, c * buf.esize, d);
      if (s < n - 2) m.send(next, base + k * buf.esize, c * buf.esize, d);
    }
  }
  m.flush(d);
}

void ring_all_reduce(PeerLinks& m, Span buf, DType wire, ReduceOp op, Deadline d) {
  const auto off = balanced_offsets(buf.count, m.size());
  ring_reduce_scatter(m, buf, off, wire, op, d);
  ring_all_gather(m, buf, off, d);
}

}  // namespace ringloom::comm
