// CUDA Graph capture and replay of the work ringloom issues on a device's compute stream.
//
// A training step of a small model is hundreds of short kernels; launched one by one from
// the host the GPU idles in the gaps between them. Captured once into a CUDA Graph
// (cudaStreamBeginCapture ... cudaStreamEndCapture, cudaGraphInstantiate) the whole step is
// one cudaGraphLaunch and the gaps close. A replay repeats the recorded kernels with the
// recorded arguments and addresses, so whatever changes between steps must live in device
// memory the graph reads: the caller copies new inputs into the same (static) buffers and
// keeps step-dependent scalars (AdamW's lr and bias corrections) in a device buffer.
//
// What makes a capture legal, and how this file enforces it:
//  - no cudaMalloc while recording: the caching allocator serves the capture from its cache
//    only (core/cuda/allocator.h), failing with a clear error when it cannot;
//  - the graph's memory stays the graph's: allocations and frees during capture go to a
//    private pool owned by this Graph, released when it is destroyed;
//  - no host synchronisation: host<->device copies and synchronize() refuse while the
//    stream is capturing (core/cuda/backend.cu), naming the problem.
// The capture runs in cudaStreamCaptureModeRelaxed: the checks above are ours, and relaxed
// mode leaves harmless host-side calls (cudaFuncSetAttribute, cuBLASLt's queries) legal.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace ringloom::cuda {

class Graph {
 public:
  explicit Graph(int device);
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Starts recording the device's current stream (current_stream(device)).
  void begin_capture();
  // Stops recording and instantiates the executable graph.
  void end_capture();
  // After an error while recording: stops and discards the capture. A no-op otherwise.
  void abort_capture() noexcept;
  // Launches the instantiated graph on the device's current stream (asynchronous).
  void replay();

  bool capturing() const { return capturing_; }
  bool ready() const { return exec_ != nullptr; }
  int device() const { return device_; }
  size_t num_nodes() const;

 private:
  int device_;
  int pool_;
  bool capturing_ = false;
  cudaStream_t stream_ = nullptr;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

// Whether `device`'s current stream is recording a capture (host copies must not happen).
bool stream_is_capturing(int device);

}  // namespace ringloom::cuda
