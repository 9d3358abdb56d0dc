#include "core/cuda/graph.h"

#include "core/cuda/allocator.h"
#include "core/cuda/check.h"
#include "core/cuda/context.h"

namespace ringloom::cuda {

Graph::Graph(int device) : device_(device) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    n = 0;
  }
  RL_CHECK(n > 0, Runtime, "CudaGraph: no CUDA device is visible");
  RL_CHECK(device >= 0 && device < n, Value, "CudaGraph: device cuda:", device, " does not exist (", n,
           " visible)");
  pool_ = create_private_pool(device);
}

Graph::~Graph() {
  abort_capture();
  if (exec_) cudaGraphExecDestroy(exec_);  // an in-flight replay finishes first (CUDA frees it after)
  if (graph_) cudaGraphDestroy(graph_);
  // Blocks return to the shared cache; reuse is stream-ordered after any in-flight replay.
  release_private_pool(device_, pool_);
}

void Graph::begin_capture() {
  RL_CHECK(!capturing_, Runtime, "CudaGraph.capture_begin: already capturing");
  RL_CHECK(exec_ == nullptr, Runtime, "CudaGraph.capture_begin: this graph was already captured; make a new one");
  DeviceGuard g(device_);
  stream_ = current_stream(device_);
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream_, &status));
  RL_CHECK(status == cudaStreamCaptureStatusNone, Runtime, "CudaGraph.capture_begin: the compute stream of cuda:",
           device_, " is already being captured");
  begin_capture_allocations(device_, pool_);
  const cudaError_t err = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed);
  if (err != cudaSuccess) {
    end_capture_allocations(device_);
    cudaGetLastError();
    fail(ErrorKind::Runtime, "CudaGraph.capture_begin: cudaStreamBeginCapture failed on cuda:", device_, ": ",
         cudaGetErrorString(err));
  }
  capturing_ = true;
}

void Graph::end_capture() {
  RL_CHECK(capturing_, Runtime, "CudaGraph.capture_end: capture_begin was not called");
  DeviceGuard g(device_);
  capturing_ = false;
  end_capture_allocations(device_);
  const cudaError_t err = cudaStreamEndCapture(stream_, &graph_);
  if (err != cudaSuccess) {
    cudaGetLastError();
    if (graph_) cudaGraphDestroy(graph_);
    graph_ = nullptr;
    fail(ErrorKind::Runtime, "CudaGraph.capture_end: the capture on cuda:", device_, " failed (",
         cudaGetErrorString(err),
         "): something in the captured region synchronised with the host, used another stream without "
         "joining it back, or called an API that is illegal during capture");
  }
  CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
}

void Graph::abort_capture() noexcept {
  if (!capturing_) return;
  capturing_ = false;
  end_capture_allocations(device_);
  int prev = -1;
  cudaGetDevice(&prev);
  cudaSetDevice(device_);
  cudaGraph_t g = nullptr;
  cudaStreamEndCapture(stream_, &g);  // ends the (possibly invalidated) capture
  if (g) cudaGraphDestroy(g);
  cudaGetLastError();  // the capture's error is reported by whoever raised it
  if (prev >= 0) cudaSetDevice(prev);
}

void Graph::replay() {
  RL_CHECK(exec_ != nullptr, Runtime, "CudaGraph.replay: nothing captured yet (capture_begin/capture_end first)");
  DeviceGuard g(device_);
  CUDA_CHECK(cudaGraphLaunch(exec_, current_stream(device_)));
}

size_t Graph::num_nodes() const {
  if (!graph_) return 0;
  size_t n = 0;
  CUDA_CHECK(cudaGraphGetNodes(graph_, nullptr, &n));
  return n;
}

bool stream_is_capturing(int device) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(current_stream(device), &status));
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace ringloom::cuda
