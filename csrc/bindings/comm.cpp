// ringloom._C.comm: the rendezvous store, process groups and their Work handles.
// Python users go through ringloom.distributed, which reads the environment and wraps these.
// Everything that can block (connecting, store waits, building the peer links, waiting on Work,
// shutting down) releases the GIL, so the group's worker thread can take it when it drops
// the last reference to a NumPy-backed tensor.
#include <pybind11/stl.h>

#include <optional>

#include "bindings/registry.h"
#include "comm/algorithms.h"
#include "comm/ipc_plan.h"
#include "comm/ipc_transport.h"
#include "comm/nccl_group.h"
#include "comm/process_group.h"
#include "comm/store.h"

namespace py = pybind11;
using namespace ringloom;
using namespace ringloom::comm;

namespace {

// Destroying a group joins its worker thread; do that without holding the GIL.
std::shared_ptr<ProcessGroup> gil_free_deleter(std::shared_ptr<ProcessGroup> pg) {
  if (!pg) return pg;
  ProcessGroup* raw = pg.get();
  return std::shared_ptr<ProcessGroup>(raw, [keep = std::move(pg)](ProcessGroup*) mutable {
    if (Py_IsInitialized() && PyGILState_Check()) {
      py::gil_scoped_release nogil;
      keep.reset();
    } else {
      keep.reset();
    }
  });
}

std::vector<std::string> keys_arg(const py::object& keys) {
  if (py::isinstance<py::str>(keys)) return {keys.cast<std::string>()};
  return keys.cast<std::vector<std::string>>();
}

}  // namespace

RINGLOOM_BIND(comm, 20) {
  py::module_ c = m.attr("comm").cast<py::module_>();
  c.attr("MAX_FRAME") = kMaxFrame;
  c.attr("MAX_KEY") = kMaxKey;
  c.attr("MAX_HELLO_FRAME") = kMaxHelloFrame;

  py::class_<StoreServer, std::shared_ptr<StoreServer>>(c, "StoreServer",
                                                        "The key-value store server (runs on a background thread)")
      .def(py::init<const std::string&, int, std::string>(), py::arg("host"), py::arg("port"), py::arg("token"),
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("port", &StoreServer::port);

  py::class_<StoreClient, std::shared_ptr<StoreClient>>(c, "Store", "A connection to the key-value store")
      .def(py::init<const std::string&, int, const std::string&, int, double>(), py::arg("host"), py::arg("port"),
           py::arg("token"), py::arg("rank"), py::arg("timeout"), py::call_guard<py::gil_scoped_release>())
      .def("set", [](StoreClient& s, const std::string& k, const py::bytes& v) {
             std::string val = v;
             py::gil_scoped_release nogil;
             s.set(k, val);
           }, py::arg("key"), py::arg("value"))
      .def("get", [](StoreClient& s, const std::string& k, std::optional<double> timeout) {
             std::string v;
             {
               py::gil_scoped_release nogil;
               v = s.get(k, timeout.value_or(s.timeout()));
             }
             return py::bytes(v);
           }, py::arg("key"), py::arg("timeout") = py::none())
      .def("wait", [](StoreClient& s, const py::object& keys, std::optional<double> timeout) {
             auto ks = keys_arg(keys);
             py::gil_scoped_release nogil;
             s.wait(ks, timeout.value_or(s.timeout()));
           }, py::arg("keys"), py::arg("timeout") = py::none())
      .def("add", &StoreClient::add, py::arg("key"), py::arg("delta"), py::call_guard<py::gil_scoped_release>())
      .def("check", [](StoreClient& s, const py::object& keys) {
             auto ks = keys_arg(keys);
             py::gil_scoped_release nogil;
             return s.check(ks);
           }, py::arg("keys"))
      .def("delete", &StoreClient::remove, py::arg("key"), py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("rank", &StoreClient::rank)
      .def_property_readonly("timeout", &StoreClient::timeout)
      .def_property_readonly("local_address", &StoreClient::local_address);

  py::class_<Work, std::shared_ptr<Work>>(c, "Work", "Handle of a queued collective")
      .def("wait_for", &Work::wait_for, py::arg("seconds"), py::call_guard<py::gil_scoped_release>(),
           "Waits up to `seconds` (<0: no limit); True when done (raises its error), False if still running")
      .def("is_completed", &Work::is_completed)
      .def_property_readonly("op", &Work::op);

  py::class_<ProcessGroup, std::shared_ptr<ProcessGroup>>(c, "ProcessGroup", "Collectives among a group of ranks")
      .def(py::init([](std::shared_ptr<StoreClient> store, std::shared_ptr<StoreServer> server, std::string name,
                       std::vector<int> members, int global_rank, const std::string& backend, double timeout,
                       std::string token) {
             Backend b = parse_backend(backend);
             std::shared_ptr<ProcessGroup> pg;
             {
               py::gil_scoped_release nogil;
               pg = std::make_shared<ProcessGroup>(std::move(store), std::static_pointer_cast<void>(server),
                                                   std::move(name), std::move(members), global_rank, b, timeout,
                                                   std::move(token));
             }
             return gil_free_deleter(std::move(pg));
           }),
           py::arg("store"), py::arg("server"), py::arg("name"), py::arg("members"), py::arg("global_rank"),
           py::arg("backend"), py::arg("timeout"), py::arg("token"))
      .def_property_readonly("rank", &ProcessGroup::rank)
      .def_property_readonly("size", &ProcessGroup::size)
      .def_property_readonly("members", &ProcessGroup::members)
      .def_property_readonly("name", &ProcessGroup::name)
      .def_property_readonly("timeout", &ProcessGroup::timeout)
      .def_property_readonly("backend", [](const ProcessGroup& g) { return std::string(backend_name(g.backend())); })
      .def_property_readonly("store", [](ProcessGroup& g) { return &g.store(); }, py::return_value_policy::reference_internal)
      .def("all_reduce", [](ProcessGroup& g, const Tensor& t, const std::string& op) {
             return g.all_reduce(t, parse_reduce_op(op));
           }, py::arg("tensor"), py::arg("op") = "sum")
      .def("reduce_scatter", [](ProcessGroup& g, const Tensor& out, const Tensor& in, const std::string& op) {
             return g.reduce_scatter(out, in, parse_reduce_op(op));
           }, py::arg("output"), py::arg("input"), py::arg("op") = "sum")
      .def("all_gather", &ProcessGroup::all_gather, py::arg("output"), py::arg("input"))
      .def("broadcast", &ProcessGroup::broadcast, py::arg("tensor"), py::arg("src"))
      .def("barrier", &ProcessGroup::barrier)
      .def("send", &ProcessGroup::send, py::arg("tensor"), py::arg("dst"))
      .def("recv", &ProcessGroup::recv, py::arg("tensor"), py::arg("src"))
      .def("new_group", [](ProcessGroup& g, std::vector<int> ranks, const std::string& backend) {
             Backend b = parse_backend(backend);
             std::shared_ptr<ProcessGroup> sub;
             {
               py::gil_scoped_release nogil;
               sub = g.new_group(std::move(ranks), b);
             }
             return gil_free_deleter(std::move(sub));
           }, py::arg("ranks"), py::arg("backend"))
      .def("shutdown", &ProcessGroup::shutdown, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("cuda_transport", &ProcessGroup::cuda_transport,
                             "'ipc', 'tcp (<why not ipc>)' or 'undecided' before the first CUDA op")
      .def_property("ipc_oneshot_max_bytes", &ProcessGroup::ipc_oneshot_max_bytes,
                    &ProcessGroup::set_ipc_oneshot_max_bytes,
                    "CUDA all_reduce up to this many bytes runs one-shot (same value on every rank)");

  // The IPC transport's host-side bookkeeping, bound for the CPU tests (tests/distributed/test_ipc_plan.py).
  py::module_ ipc = c.def_submodule("ipc", "CUDA IPC transport bookkeeping (plans, flags, set-up decision)");
  ipc.attr("MAX_RANKS") = kIpcMaxRanks;
  ipc.attr("MAX_CHANNELS") = kIpcMaxChannels;
  ipc.attr("ALIGN") = kIpcAlign;
  ipc.attr("STEP_BITS") = kIpcStepBits;
  py::class_<IpcPlan>(ipc, "Plan", "How a collective's data moves through the IPC buffers")
      .def_property_readonly("nseg", [](const IpcPlan& p) { return p.nseg; })
      .def_property_readonly("off", [](const IpcPlan& p) {
        return std::vector<size_t>(p.off, p.off + p.nseg + 1);
      })
      .def_readonly("per_round", &IpcPlan::per_round)
      .def_readonly("rounds", &IpcPlan::rounds)
      .def_readonly("channels", &IpcPlan::channels)
      .def_readonly("per_channel", &IpcPlan::per_channel)
      .def_readonly("sub_elems", &IpcPlan::sub_elems)
      .def_readonly("nsub", &IpcPlan::nsub)
      .def_readonly("steps", &IpcPlan::steps)
      .def("piece", [](const IpcPlan& p, size_t k, int seg, int c, int s) {
             RL_CHECK(k < p.rounds && seg >= 0 && seg < p.nseg && c >= 0 && c < p.channels && s >= 0 && s < p.nsub,
                      Index, "ipc plan piece (", k, ", ", seg, ", ", c, ", ", s, ") out of range");
             const IpcPiece x = ipc_piece(p, k, seg, c, s);
             return py::make_tuple(x.elem, x.buf, x.count);
           }, py::arg("round"), py::arg("seg"), py::arg("channel"), py::arg("sub"),
           "(data index, region index, count) of one sub-chunk");
  ipc.def("make_plan", &make_ipc_plan, py::arg("off"), py::arg("region_elems"), py::arg("esize"), py::arg("sub_bytes"),
          py::arg("min_channel_bytes"), py::arg("steps"), py::arg("max_channels") = kIpcMaxChannels);
  ipc.def("equal_segments", &ipc_equal_segments, py::arg("seg_len"), py::arg("n"));
  ipc.def("all_reduce_segments", &ipc_all_reduce_segments, py::arg("count"), py::arg("n"));
  ipc.def("ready_value", &ipc_ready_value, py::arg("round"), py::arg("step"), py::arg("sub"), py::arg("nsub"));
  ipc.def("ack_needed", &ipc_ack_needed, py::arg("round"));
  ipc.def("refusal", &ipc_refusal, py::arg("hosts"), py::arg("gpus"), py::arg("mps") = std::vector<bool>{},
          py::arg("disabled") = false);
  ipc.def("channel_limit", &ipc_channel_limit, py::arg("gpus"));
  ipc.def("choose_algo", [](bool tree, size_t nbytes, size_t oneshot_max, size_t region_bytes) {
    return std::string(ipc_algo_name(choose_ipc_algo(tree, nbytes, oneshot_max, region_bytes)));
  }, py::arg("tree"), py::arg("nbytes"), py::arg("oneshot_max"), py::arg("region_bytes"));
  ipc.def("host_id", &ipc_host_id);
  ipc.def("tree_node", [](int n, int shift, int rank) {
    RL_CHECK(n >= 1 && rank >= 0 && rank < n && (shift == 0 || shift == 1), Value, "tree_node: bad arguments");
    const TreeNode t = build_tree(n, shift)[size_t(rank)];
    return py::make_tuple(t.parent, t.child[0], t.child[1]);
  }, py::arg("n"), py::arg("shift"), py::arg("rank"), "(parent, child0, child1) of `rank` in tree `shift` (-1: none)");
  py::class_<IpcRounds>(ipc, "Rounds", "Round numbering over a group's life")
      .def(py::init<>())
      .def("take", &IpcRounds::take, py::arg("rounds"))
      .def_property_readonly("next", &IpcRounds::next);

  // Bound in every build (the names, and so the type stubs, are the same everywhere);
  // without NCCL the NcclGroup constructor raises NotImplementedError.
  c.attr("has_nccl") =
#ifdef RINGLOOM_WITH_NCCL
      true;
#else
      false;
#endif
  py::class_<NcclWork, std::shared_ptr<NcclWork>>(c, "NcclWork", "Handle of an NCCL op (ordered on the streams)")
      .def("wait_for", &NcclWork::wait_for, py::arg("seconds"), py::call_guard<py::gil_scoped_release>())
      .def("is_completed", &NcclWork::is_completed)
      .def_property_readonly("op", &NcclWork::op);
  py::class_<NcclGroup, std::shared_ptr<NcclGroup>>(c, "NcclGroup", "An NCCL communicator for one group")
      .def(py::init<StoreClient&, const std::string&, int, int, int, double>(), py::arg("store"), py::arg("name"),
           py::arg("rank"), py::arg("size"), py::arg("device"), py::arg("timeout"),
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("rank", &NcclGroup::rank)
      .def_property_readonly("size", &NcclGroup::size)
      .def_property_readonly("device", &NcclGroup::device)
      .def("all_reduce", [](NcclGroup& g, const Tensor& t, const std::string& op) {
             return g.all_reduce(t, parse_reduce_op(op));
           }, py::arg("tensor"), py::arg("op") = "sum")
      .def("reduce_scatter", [](NcclGroup& g, const Tensor& out, const Tensor& in, const std::string& op) {
             return g.reduce_scatter(out, in, parse_reduce_op(op));
           }, py::arg("output"), py::arg("input"), py::arg("op") = "sum")
      .def("all_gather", &NcclGroup::all_gather, py::arg("output"), py::arg("input"))
      .def("broadcast", &NcclGroup::broadcast, py::arg("tensor"), py::arg("src"))
      .def("send", &NcclGroup::send, py::arg("tensor"), py::arg("dst"))
      .def("recv", &NcclGroup::recv, py::arg("tensor"), py::arg("src"))
      .def("barrier", &NcclGroup::barrier);
}
