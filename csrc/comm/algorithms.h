// Collective algorithms over PeerLinks (a full mesh of TCP connections), on host buffers of a wire dtype
// (float32, int32, int64, uint8; raw bytes for the ops that do not reduce).
//
// ring (Patarasuk & Yuan 2009, "Bandwidth optimal all-reduce algorithms for clusters of
// workstations"): the buffer is cut into n segments; a reduce-scatter of n-1 steps leaves
// segment r fully reduced on rank r, an all-gather of n-1 steps hands every segment round.
// Each rank sends 2(n-1)/n of the data: optimal in bandwidth, but 2(n-1) latencies.
// Segments are cut into chunks, and a chunk is passed on as soon as it has been received
// and reduced, so the steps overlap (the sends run on PeerLinks' sender threads).
//
// tree (Sanders, Speck & Träff 2009, "Two-tree algorithms for full bandwidth broadcast,
// reduction and scan"; NCCL's double binary tree): the buffer is halved and each half is
// reduced up and broadcast down its own binary tree, 2 log n latencies. The two trees are
// built so that most leaves of one are inner nodes of the other: each rank does the inner
// node's work (receive two, send one) in at most one tree, which keeps it near the ring's
// bandwidth while the depth stays logarithmic. Chunks pipeline down the tree as well.
#pragma once
#include <cstddef>
#include <vector>

#include "comm/peer_links.h"
#include "comm/reduce.h"

namespace ringloom::comm {

struct Span {
  char* data;
  size_t count;  // elements
  size_t esize;  // bytes per element
};

// Offsets of n segments of `count` elements, balanced (sizes differ by at most one).
std::vector<size_t> balanced_offsets(size_t count, int n);

// Chunk length (elements) used by the pipelines; RINGLOOM_COMM_CHUNK_BYTES overrides.
size_t chunk_elems(size_t esize);

// On return segment `me` (offsets `off`) holds the reduction of every rank's segment.
void ring_reduce_scatter(PeerLinks& m, Span buf, const std::vector<size_t>& off, DType wire, ReduceOp op, Deadline d);
// On entry segment `me` is valid; on return every segment is.
void ring_all_gather(PeerLinks& m, Span buf, const std::vector<size_t>& off, Deadline d);
void ring_all_reduce(PeerLinks& m, Span buf, DType wire, ReduceOp op, Deadline d);

void tree_all_reduce(PeerLinks& m, Span buf, DType wire, ReduceOp op, Deadline d);
// Pipelined binary-tree broadcast of raw bytes from member `root`.
void tree_broadcast(PeerLinks& m, Span buf, int root, Deadline d);

// One binary tree over n ranks: parent (-1 at the root) and up to two children.
struct TreeNode {
  int parent = -1;
  int child[2] = {-1, -1};
};
// The in-order tree on labels 1..n (label q's level is the trailing zeros of q, so odd
// labels are leaves), with rank = (q - 1 + shift) mod n. Shift 0 and 1 give the double
// tree's two halves: a rank that is a leaf in one is an inner node of the other.
std::vector<TreeNode> build_tree(int n, int shift);

}  // namespace ringloom::comm
