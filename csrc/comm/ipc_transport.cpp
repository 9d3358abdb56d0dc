// Host identity for the IPC transport's same-host check; the CPU build's connect_ipc.
#include "comm/ipc_transport.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace ringloom::comm {

std::string ipc_host_id() {
  if (const char* e = std::getenv("RINGLOOM_HOST_ID"); e && *e) return e;
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  std::string boot;
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::getline(f, boot);
  return std::string(name) + "/" + boot;
}

#ifndef RINGLOOM_WITH_CUDA
IpcSetup connect_ipc(StoreClient&, const std::string&, int, int, int, double) {
  return {nullptr, "this build of ringloom has no CUDA"};
}
#endif

}  // namespace ringloom::comm
