// volt's init threads: where CPU fills and the huge-page prefault run, on both LibTorch legs. Apart from
// the generator so that code which only allocates (the huge-page allocator, the fuzzers' library) needs no
// kernels.
#include "init_threads.h"

#include "volt/init/counter_rng.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace volt {
namespace detail {
namespace {

// Each task gets at least this many elements: below that, starting it costs more than it saves.
constexpr int64_t kMinElementsPerTask = int64_t{1} << 16;
// Tasks per thread: small enough chunks that a thread the host preempts (these are VMs, and the cores are
// shared) leaves its share to the others instead of holding up the whole fill.
constexpr int64_t kTasksPerThread = 8;

// volt's init threads: at::get_num_threads() - 1 workers, started on first use and kept, plus the calling
// thread, taking tasks from one counter. Both LibTorch legs fill on these: at::parallel_for is parallel
// only where the caller is compiled with ATen's OpenMP backend (Debian's 1.13 runs it serially for volt),
// and OpenMP's workers spin after each region, stealing the cores the next fill needs. Starting threads
// per fill costs a stack's page faults each time. A second caller while the workers are busy (another
// thread building a model, or a fill inside a task) runs on fresh threads instead, as does a forked child.
class InitThreads {
 public:
  static InitThreads& instance() {
    static std::mutex creation;
    static InitThreads* threads = nullptr;
    const std::lock_guard<std::mutex> lock(creation);
    // Workers do not survive fork(): a child starts its own (the parent's stay allocated, unused).
    if (threads == nullptr || threads->pid_ != getpid()) threads = new InitThreads();  // never destroyed:
    return *threads;  // workers blocked at exit are harmless, a destructor racing static teardown is not
  }

  // Calls task(t) for every t in [0, tasks) on `threads` threads, the calling one included; rethrows the
  // first exception a task threw.
  void run(int64_t tasks, int threads, const std::function<void(int64_t)>& task) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return run_on_fresh_threads(tasks, threads, task);
    start_workers(threads - 1);
    Job job{&task, tasks, std::min<int>(threads - 1, static_cast<int>(workers_.size()))};
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      ++generation_;
    }
    wake_.notify_all();
    job.work();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return job.joined == job.helpers; });
    job_ = nullptr;
    lock.unlock();
    if (job.failure) std::rethrow_exception(job.failure);
  }

 private:
  struct Job {
    const std::function<void(int64_t)>* task;
    int64_t tasks;
    int helpers;  // workers that take part
    std::atomic<int64_t> next{0};
    int joined = 0;  // helpers that have finished, under mutex_
    std::exception_ptr failure;
    std::mutex failure_mutex;

    Job(const std::function<void(int64_t)>* task, int64_t tasks, int helpers)
        : task(task), tasks(tasks), helpers(helpers) {}

    void work() {
      for (int64_t t = next++; t < tasks; t = next++) {
        try {
          (*task)(t);
        } catch (...) {
          const std::lock_guard<std::mutex> lock(failure_mutex);
          if (!failure) failure = std::current_exception();
        }
      }
    }
  };

  InitThreads() : pid_(getpid()) {}

  void start_workers(int count) {
    while (static_cast<int>(workers_.size()) < count) {
      const int index = static_cast<int>(workers_.size());
      workers_.emplace_back([this, index] { work(index); });
      workers_.back().detach();
    }
  }

  void work(int index) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      Job* job = job_;
      if (job == nullptr || index >= job->helpers) continue;
      lock.unlock();
      job->work();
      lock.lock();
      if (++job->joined == job->helpers) done_.notify_one();
    }
  }

  static void run_on_fresh_threads(int64_t tasks, int threads, const std::function<void(int64_t)>& task) {
    Job job{&task, tasks, threads - 1};
    std::vector<std::thread> helpers;
    for (int t = 1; t < threads; ++t) helpers.emplace_back([&] { job.work(); });
    job.work();
    for (auto& helper : helpers) helper.join();
    if (job.failure) std::rethrow_exception(job.failure);
  }

  const pid_t pid_;
  std::mutex busy_;   // held by the one caller whose job the workers run
  std::mutex mutex_;  // guards generation_, job_ and Job::joined
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  Job* job_ = nullptr;
  std::vector<std::thread> workers_;
};

// Runs body(begin, end) over [0, n) in contiguous chunks on the init threads. Chunk boundaries fall on
// stream positions (first + begin) that are multiples of `align`.
}  // namespace

int parallel_chunks(int64_t n, int64_t first, int64_t align,
                    const std::function<void(int64_t, int64_t)>& body) {
  const int threads = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / kMinElementsPerTask)));
  if (threads == 1 || n <= 0) {
    body(0, n);
    return 1;
  }
  const int64_t chunk = std::max(kMinElementsPerTask, n / (threads * kTasksPerThread));
  const int64_t tasks = (n + chunk - 1) / chunk;
  auto boundary = [&](int64_t t) {
    if (t == 0) return int64_t{0};
    if (t >= tasks) return n;
    const int64_t position = first + t * chunk;
    return std::min(n, (position + align - 1) / align * align - first);
  };
  InitThreads::instance().run(tasks, threads, [&](int64_t t) {
    const int64_t begin = boundary(t), end = boundary(t + 1);
    if (begin < end) body(begin, end);
  });
  return threads;
}

}  // namespace detail

void run_on_init_threads(int64_t n, const std::function<void(int64_t begin, int64_t end)>& body) {
  detail::parallel_chunks(n, 0, 1, body);
}

}  // namespace volt
