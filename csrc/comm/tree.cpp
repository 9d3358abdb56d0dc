// Double binary tree all-reduce and a pipelined tree broadcast (see algorithms.h).
#include <algorithm>
#include <vector>

#include "comm/algorithms.h"

namespace ringloom::comm {

std::vector<TreeNode> build_tree(int n, int shift) {
  std::vector<TreeNode> t(static_cast<size_t>(n));
  auto rank_of = [&](int q) { return (q - 1 + shift) % n; };
  for (int q = 1; q <= n; ++q) {
    const int b = q & -q;  // the subtree of label q spans labels (q - b, q + b)
    TreeNode& node = t[size_t(rank_of(q))];
    int kids = 0;
    if (b > 1) node.child[kids++] = q - b / 2;
    // Right child: the largest power-of-two step that stays in range (the subtree is
    // clipped at n, so its root may sit lower than b/2).
    for (int h = b / 2; h >= 1; h /= 2) {
      if (q + h <= n) {
        node.child[kids++] = q + h;
        break;
      }
    }
    for (int i = 0; i < kids; ++i) {
      t[size_t(rank_of(node.child[i]))].parent = rank_of(q);
      node.child[i] = rank_of(node.child[i]);
    }
  }
  return t;
}

// Chunk k of both halves is reduced up its tree, then broadcast down it, before chunk k+1:
// the root starts sending results down while the leaves still send the next chunk up.
// Every wait is for a message a tree neighbour sends in the same (chunk, phase, tree)
// step, and within one step the waits follow tree edges, so they cannot form a cycle.
void tree_all_reduce(PeerLinks& m, Span buf, DType wire, ReduceOp op, Deadline d) {
  const int n = m.size(), me = m.me();
  if (n == 1 || buf.count == 0) return;
  const TreeNode nodes[2] = {build_tree(n, 0)[size_t(me)], build_tree(n, 1)[size_t(me)]};
  const size_t half = buf.count / 2;
  const size_t start[2] = {0, half}, len[2] = {half, buf.count - half};
  const size_t ce = chunk_elems(buf.esize);
  std::vector<char> tmp(std::min(ce, len[1]) * buf.esize + 1);
  const size_t nchunks = (len[1] + ce - 1) / ce;  // len[1] >= len[0]
  for (size_t k = 0; k < nchunks; ++k) {
    for (int t = 0; t < 2; ++t) {
      if (k * ce >= len[t]) continue;
      const size_t c = std::min(ce, len[t] - k * ce);
      char* p = buf.data + (start[t] + k * ce) * buf.esize;
      for (int child : nodes[t].child) {
        if (child < 0) continue;
        m.recv(child, tmp.data(), c * buf.esize, d);
        reduce_into(p, tmp.data(), c, wire, op);
      }
      if (nodes[t].parent >= 0) m.send(nodes[t].parent, p, c * buf.esize, d);
    }
    for (int t = 0; t < 2; ++t) {
      if (k * ce >= len[t]) continue;
      const size_t c = std::min(ce, len[t] - k * ce);
      char* p = buf.data + (start[t] + k * ce) * buf.esize;
      // Overwriting p is safe: the parent's result depends on our partial sum, so it can
      // only arrive after our send of it has left.
      if (nodes[t].parent >= 0) m.recv(nodes[t].parent, p, c * buf.esize, d);
      for (int child : nodes[t].child)
        if (child >= 0) m.send(child, p, c * buf.esize, d);
    }
  }
  m.flush(d);
}

// Heap-ordered binary tree on positions p = (rank - root) mod n: parent (p-1)/2,
// children 2p+1 and 2p+2; chunks are forwarded as soon as they arrive.
void tree_broadcast(PeerLinks& m, Span buf, int root, Deadline d) {
  const int n = m.size();
  if (n == 1 || buf.count == 0) return;
  const int p = (m.me() - root + n) % n;
  auto rank_at = [&](int pos) { return (pos + root) % n; };
  const size_t ce = chunk_elems(buf.esize);
  for (size_t k = 0; k < buf.count; k += ce) {
    const size_t c = std::min(ce, buf.count - k);
    char* ptr = buf.data + k * buf.esize;
    if (p > 0) m.recv(rank_at((p - 1) / 2), ptr, c * buf.esize, d);
    for (int cp : {2 * p + 1, 2 * p + 2})
      if (cp < n) m.send(rank_at(cp), ptr, c * buf.esize, d);
  }
  m.flush(d);
}

}  // namespace ringloom::comm
