// How many threads the CPU ops use: our OpenMP loops and OpenBLAS's GEMMs together.
//
// Why one knob for both: the two are separate thread pools, and each spin-waits for a
// while after its work is done. On a machine whose cores are busy with other processes
// (or with the other pool) a spinning or descheduled thread stalls every fork-join and
// every GEMM: on our shared 2-core machine under a load of ~4, the tiny GPT-2 step took
// 7x longer with 2 spinning threads than with 1, and still 1.5-2.5x longer with passive
// waits (python/ringloom/__init__.py), which make 2 threads 1.6x faster on an idle machine.
// So the caller that knows the machine (the trainer: --threads) sets both at once.
#pragma once

namespace ringloom::cpu {

// The thread count of the next CPU op (OpenMP's max threads of the calling thread).
int num_threads();

// Sets OpenMP's thread count for the calling thread and OpenBLAS's (process-wide).
// 1 <= n <= max_threads(); anything else raises ValueError.
void set_num_threads(int n);

// The largest count set_num_threads accepts: kThreadsPerCore per hardware thread, at least
// kMinThreadLimit. Oversubscription past that only slows the ops down, and far past it
// thread creation fails inside the OpenMP runtime, which then exits the process.
constexpr int kThreadsPerCore = 4;
constexpr int kMinThreadLimit = 64;
int max_threads();

}  // namespace ringloom::cpu
