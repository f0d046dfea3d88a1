// Minimal fork-join parallelism: dynamic chunks over [0, n) on std::threads; an exception thrown
// by any worker is re-thrown on the calling thread after every worker has joined. A thread the
// system refuses to start (memory, pid or thread limits) is not an error: the threads that did
// start, the calling thread among them, take every chunk.
#pragma once
#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ragcore {

/// The most threads a caller may ask for (the bindings refuse more with a ValueError). Far above any
/// useful count (one thread per hardware thread is the most that helps), low enough that per-thread
/// scratch (a top-k heap, accumulators sized by the collection) cannot by itself exhaust memory.
constexpr int kMaxThreads = 4096;

/// Number of hardware threads (at least 1).
inline int hardware_threads() {
  const unsigned h = std::thread::hardware_concurrency();
  return h ? static_cast<int>(h) : 1;
}

/// Run fn(worker, begin, end) over chunks of [0, n) with up to n_threads threads (the calling
/// thread is worker 0). n_threads <= 1 runs inline.
template <class F>
void parallel_for(size_t n, int n_threads, size_t chunk, F&& fn) {
  if (n == 0) return;
  chunk = std::max<size_t>(chunk, 1);
  const size_t n_chunks = (n + chunk - 1) / chunk;
  const int workers = static_cast<int>(std::min<size_t>(std::max(n_threads, 1), n_chunks));
  if (workers <= 1) {
    fn(0, size_t{0}, n);
    return;
  }
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  std::atomic<bool> failed{false};
  auto work = [&](int w) {
    try {
      for (;;) {
        if (failed.load(std::memory_order_relaxed)) return;
        const size_t c = next.fetch_add(1);
        if (c >= n_chunks) return;
        const size_t b = c * chunk;
        fn(w, b, std::min(n, b + chunk));
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      failed = true;
    }
  };
  std::vector<std::thread> threads;
  try {
    threads.reserve(workers - 1);
    for (int w = 1; w < workers; ++w) threads.emplace_back(work, w);
  } catch (...) {
    // std::system_error (EAGAIN: no memory for a stack, RLIMIT_NPROC, threads-max) or bad_alloc:
    // start no more; the chunks are handed out dynamically, so those that started finish the work
  }
  work(0);
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace ragcore
