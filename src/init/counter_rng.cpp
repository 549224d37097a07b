// LibTorch-facing side of the counter-based generator: dtype and device dispatch, threads, views.
#include "volt/init/counter_rng.h"

#include "counter_rng_kernels.h"
#include "volt/config.h"
#include "volt/error.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#if VOLT_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <algorithm>
#include <exception>
#include <mutex>
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
                c10::toString(dtype), ": use LibTorch's generator (InitRng::kLibTorch) for this tensor");
  }
}

// Each thread gets at least this many elements: below that, starting it costs more than it saves.
constexpr int64_t kGrain = int64_t{1} << 18;

// Runs body(begin, end) over [0, n) on at::get_num_threads() threads, in contiguous chunks. volt starts
// its own threads: Debian's LibTorch 1.13 runs at::parallel_for serially whatever the thread count
// (measured: a 400 M-element fill takes the same 0.87 s with 1 and 2 threads).
template <typename Body>
void parallel_chunks(int64_t n, const Body& body) {
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / kGrain));
  if (threads == 1) return body(0, n);
  std::vector<std::thread> workers;
  std::exception_ptr failure;
  std::mutex failure_mutex;
  const int64_t chunk = (n + threads - 1) / threads;
  for (int64_t t = 1; t < threads; ++t) {
    workers.emplace_back([&, t] {
      try {
        body(t * chunk, std::min(n, (t + 1) * chunk));
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        failure = std::current_exception();
      }
    });
  }
  body(0, chunk);
  for (auto& worker : workers) worker.join();
  if (failure) std::rethrow_exception(failure);
}

void fill_slice(at::Tensor& out, RandomKey key, int64_t first, double a, double b, bool normal) {
  VOLT_CHECK(out.is_contiguous(), "fill_*_slice needs a contiguous output tensor; got strides ",
             out.strides());
  VOLT_CHECK(first >= 0, "a slice starts at a non-negative element index, got ", first);
  const RawDtype dtype = raw_dtype(out.scalar_type());
  const int64_t n = out.numel();
  if (n == 0) return;
  auto* bytes = static_cast<char*>(out.data_ptr());
  const auto item = static_cast<int64_t>(out.element_size());
  if (out.is_cuda()) {
#if VOLT_WITH_CUDA
    c10::cuda::CUDAGuard guard(out.device());
    void* stream = c10::cuda::getCurrentCUDAStream().stream();
    if (normal)
      detail::cuda_normal_fill(bytes, dtype, n, key.seed, key.key, first, a, b, stream);
    else
      detail::cuda_uniform_fill(bytes, dtype, n, key.seed, key.key, first, a, b, stream);
    return;
#else
    VOLT_FAIL("this build of volt has no CUDA kernels: rebuild against a CUDA-enabled LibTorch");
#endif
  }
  VOLT_CHECK(out.is_cpu(), "volt's counter-based generator fills CPU or CUDA tensors, not ", out.device());
  parallel_chunks(n, [&](int64_t begin, int64_t end) {
    if (normal)
      detail::cpu_normal_fill(bytes + begin * item, dtype, end - begin, key.seed, key.key, first + begin, a,
                              b);
    else
      detail::cpu_uniform_fill(bytes + begin * item, dtype, end - begin, key.seed, key.key, first + begin, a,
                               b);
  });
}

// Element p of the stream goes to storage position p: a contiguous tensor is one slice; a strided view
// fills the span of storage it covers and copies its own positions out of it.
void keyed_fill(at::Tensor& self, RandomKey key, double a, double b, bool normal) {
  if (self.numel() == 0) return;
  if (self.is_contiguous()) return fill_slice(self, key, self.storage_offset(), a, b, normal);
  int64_t lowest = self.storage_offset(), highest = self.storage_offset();
  for (int64_t d = 0; d < self.dim(); ++d) {
    const int64_t reach = (self.size(d) - 1) * self.stride(d);
    (reach < 0 ? lowest : highest) += reach;
  }
  at::Tensor span = at::empty({highest - lowest + 1}, self.options());
  fill_slice(span, key, lowest, a, b, normal);
  self.copy_(span.as_strided(self.sizes(), self.strides(), self.storage_offset() - lowest));
}

}  // namespace

bool counter_rng_supports(c10::ScalarType dtype) {
  return dtype == c10::kDouble || dtype == c10::kFloat || dtype == c10::kHalf || dtype == c10::kBFloat16;
}

void fill_uniform_slice(at::Tensor& out, RandomKey key, int64_t first, double low, double high) {
  fill_slice(out, key, first, low, high - low, /*normal=*/false);
}

void fill_normal_slice(at::Tensor& out, RandomKey key, int64_t first, double mean, double std) {
  fill_slice(out, key, first, mean, std, /*normal=*/true);
}

void keyed_uniform_(at::Tensor& self, RandomKey key, double low, double high) {
  keyed_fill(self, key, low, high - low, /*normal=*/false);
}

void keyed_normal_(at::Tensor& self, RandomKey key, double mean, double std) {
  keyed_fill(self, key, mean, std, /*normal=*/true);
}

}  // namespace volt
