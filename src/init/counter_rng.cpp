// LibTorch-facing side of the counter-based generator: checks, dtype and device dispatch, threads, views.
// The values themselves are defined in philox.h and computed by counter_rng_cpu.cpp / counter_rng_cuda.cu.
#include "volt/init/counter_rng.h"

#include "counter_rng_kernels.h"
#include "volt/config.h"
#include "volt/error.h"

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#if VOLT_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace volt {
namespace {

using detail::RawDtype;

RawDtype raw_dtype(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kDouble:
      return RawDtype::kFloat64;
    case c10::kFloat:
      return RawDtype::kFloat32;
    case c10::kHalf:
      return RawDtype::kFloat16;
    case c10::kBFloat16:
      return RawDtype::kBFloat16;
    default:
      VOLT_FAIL("volt's counter-based generator fills float64, float32, float16 and bfloat16 tensors, not ",
                c10::toString(dtype),
                ": fill this tensor with LibTorch's generator instead (InitOptions().rng(InitRng::kLibTorch) "
                "in an init scope)");
  }
}

// Each task gets at least this many elements: below that, starting it costs more than it saves.
constexpr int64_t kMinElementsPerTask = int64_t{1} << 16;
// Tasks per thread: small enough chunks that a thread the host preempts (these are VMs, and the cores are
// shared) leaves its share to the others instead of holding up the whole fill.
constexpr int64_t kTasksPerThread = 8;
// Task boundaries fall on multiples of the CPU kernels' batch (in stream positions), so that no batch is
// computed twice.
constexpr int64_t kBatchElements = 256;

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
void parallel_chunks(int64_t n, int64_t first, int64_t align,
                     const std::function<void(int64_t, int64_t)>& body) {
  const int threads = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / kMinElementsPerTask)));
  if (threads == 1 || n <= 0) return body(0, n);
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
}

// The kernel the CPU fills use: the best this CPU runs, capped by VOLT_CPU_KERNEL.
detail::CpuKernel cpu_kernel() {
  static const detail::CpuKernel kernel = [] {
    detail::CpuKernel best = detail::CpuKernel::kBaseline;
    for (auto k : detail::kCpuKernels)
      if (detail::cpu_kernel_supported(k)) best = k;
    const char* cap = std::getenv("VOLT_CPU_KERNEL");
    if (cap == nullptr || *cap == '\0') return best;
    std::string names;
    for (auto k : detail::kCpuKernels) {
      if (std::strcmp(cap, detail::cpu_kernel_name(k)) == 0) return std::min(k, best);
      names += std::string(names.empty() ? "" : ", ") + detail::cpu_kernel_name(k);
    }
    VOLT_FAIL("VOLT_CPU_KERNEL='", cap, "' names no CPU kernel of volt's: use one of ", names,
              " (a kernel this CPU lacks falls back to the best it has), or unset it");
  }();
  return kernel;
}

// An in-place write to a leaf that requires grad is what autograd forbids outside no-grad mode; say so
// the way LibTorch would, but with the fix.
void check_writable(const at::Tensor& t, const char* what) {
  VOLT_CHECK(!(t.requires_grad() && t.is_leaf() && c10::GradMode::is_enabled()), what,
             " writes in place into a leaf tensor that requires grad: call it under torch::NoGradGuard (as "
             "torch::nn::init does)");
}

void fill_slice(at::Tensor& out, RandomKey key, int64_t first, double a, double b, bool normal,
                const char* what) {
  const RawDtype dtype = raw_dtype(out.scalar_type());
  VOLT_CHECK(out.layout() == c10::kStrided, what, " fills strided (dense) tensors, not ", out.layout());
  VOLT_CHECK(out.is_contiguous(), what, " needs a contiguous output; got sizes ", out.sizes(),
             " and strides ", out.strides(),
             ": fill a contiguous tensor and copy it, or use keyed_uniform_/keyed_normal_");
  VOLT_CHECK(first >= 0, what, " starts at a stream position >= 0, got ", first);
  check_writable(out, what);
  const int64_t n = out.numel();
  if (n == 0) return;
  auto* bytes = static_cast<char*>(out.data_ptr());
  const auto item = static_cast<int64_t>(out.element_size());
  if (out.is_cuda()) {
#if VOLT_WITH_CUDA
    const c10::cuda::CUDAGuard device_guard(out.device());
    void* stream = c10::cuda::getCurrentCUDAStream(out.device().index()).stream();
    if (normal)
      detail::cuda_normal_fill(bytes, dtype, n, key.seed, key.key, first, a, b, stream);
    else
      detail::cuda_uniform_fill(bytes, dtype, n, key.seed, key.key, first, a, b, stream);
#else
    VOLT_FAIL(what,
              " got a CUDA tensor, but this build of volt has no CUDA kernels: build volt against a "
              "CUDA-enabled LibTorch, or fill the tensor on the CPU and copy it");
#endif
  } else {
    VOLT_CHECK(out.is_cpu(), what, " fills CPU or CUDA tensors, not ", out.device(),
               " ones: fill a CPU tensor and copy it to the device");
    const detail::CpuKernel kernel = cpu_kernel();
    parallel_chunks(n, first, kBatchElements, [&](int64_t begin, int64_t end) {
      detail::cpu_fill(kernel, normal, bytes + begin * item, dtype, end - begin, key.seed, key.key,
                       first + begin, a, b);
    });
  }
  // Written through the raw pointer: tell autograd's version counter, as an ATen in-place op would.
  out.unsafeGetTensorImpl()->bump_version();
}

// Element p of the stream goes to storage position p: a contiguous tensor is one slice; a strided view
// fills the span of storage it covers into a temporary and copies its own positions out of it.
void keyed_fill(at::Tensor& self, RandomKey key, double a, double b, bool normal, const char* what) {
  raw_dtype(self.scalar_type());  // the dtype error comes first, even for empty tensors
  if (self.numel() == 0) return;
  if (self.is_contiguous()) return fill_slice(self, key, self.storage_offset(), a, b, normal, what);
  VOLT_CHECK(self.layout() == c10::kStrided, what, " fills strided (dense) tensors, not ", self.layout());
  VOLT_CHECK(at::has_internal_overlap(self) != at::MemOverlap::Yes, what,
             " got a view whose elements share memory (sizes ", self.sizes(), ", strides ", self.strides(),
             "), e.g. an expanded tensor: fill the tensor it views instead");
  check_writable(self, what);
  int64_t lowest = self.storage_offset(), highest = self.storage_offset();
  for (int64_t d = 0; d < self.dim(); ++d) {
    const int64_t reach = (self.size(d) - 1) * self.stride(d);
    (reach < 0 ? lowest : highest) += reach;
  }
  // The temporary and the copy are volt's own work: keep an init scope's interception (which would key
  // them, defer them or put them on the meta device) out of them.
  const c10::impl::ExcludeDispatchKeyGuard no_init_scope(c10::DispatchKey::VOLT_INIT_DISPATCH_KEY);
  at::Tensor span = at::empty({highest - lowest + 1}, self.options());
  fill_slice(span, key, lowest, a, b, normal, what);
  self.copy_(span.as_strided(self.sizes(), self.strides(), self.storage_offset() - lowest));
}

}  // namespace

std::string counter_rng_cpu_kernel() { return detail::cpu_kernel_name(cpu_kernel()); }

void run_on_init_threads(int64_t n, const std::function<void(int64_t begin, int64_t end)>& body) {
  parallel_chunks(n, 0, 1, body);
}

bool counter_rng_supports(c10::ScalarType dtype) {
  return dtype == c10::kDouble || dtype == c10::kFloat || dtype == c10::kHalf || dtype == c10::kBFloat16;
}

void fill_uniform_slice(at::Tensor& out, RandomKey key, int64_t first, double low, double high) {
  fill_slice(out, key, first, low, high - low, /*normal=*/false, "volt::fill_uniform_slice");
}

void fill_normal_slice(at::Tensor& out, RandomKey key, int64_t first, double mean, double std) {
  fill_slice(out, key, first, mean, std, /*normal=*/true, "volt::fill_normal_slice");
}

void keyed_uniform_(at::Tensor& self, RandomKey key, double low, double high) {
  keyed_fill(self, key, low, high - low, /*normal=*/false, "volt::keyed_uniform_");
}

void keyed_normal_(at::Tensor& self, RandomKey key, double mean, double std) {
  keyed_fill(self, key, mean, std, /*normal=*/true, "volt::keyed_normal_");
}

}  // namespace volt
