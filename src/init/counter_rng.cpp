// LibTorch-facing side of the counter-based generator: checks, dtype and device dispatch, threads, views.
// The values themselves are defined in philox.h and computed by counter_rng_cpu.cpp / counter_rng_cuda.cu.
#include "volt/init/counter_rng.h"

#include "counter_rng_kernels.h"
#include "init_counters.h"
#include "init_threads.h"
#include "volt/config.h"
#include "volt/error.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
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

// Task boundaries fall on multiples of the CPU kernels' batches (256 or 512 elements, in stream
// positions), so that no batch is computed twice.
constexpr int64_t kBatchElements = 512;

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

detail::Distribution distribution(bool normal, InitStream stream) {
  if (!normal) return detail::Distribution::kUniform;
  VOLT_CHECK(stream == InitStream::kPhiloxBoxMuller24 || stream == InitStream::kPhiloxBoxMuller16,
             "unknown init stream id ", static_cast<int>(stream),
             ": use InitStream::kPhiloxBoxMuller24 (v1) or InitStream::kPhiloxBoxMuller16 (v2)");
  return stream == InitStream::kPhiloxBoxMuller24 ? detail::Distribution::kNormal24
                                                  : detail::Distribution::kNormal16;
}

void fill_slice(at::Tensor& out, RandomKey key, int64_t first, double a, double b, bool normal,
                const char* what) {
  const detail::Distribution drawn = distribution(normal, key.stream);
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
      detail::cuda_normal_fill(drawn, bytes, dtype, n, key.seed, key.key, first, a, b, stream);
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
    const double start = detail::counter_clock();
    const int threads = detail::parallel_chunks(n, first, kBatchElements, [&](int64_t begin, int64_t end) {
      detail::cpu_fill(kernel, drawn, bytes + begin * item, dtype, end - begin, key.seed, key.key,
                       first + begin, a, b);
    });
    detail::count_cpu_fill(detail::counter_clock() - start, n, threads);
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

uint64_t seed_from_libtorch() {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get<at::CPUGeneratorImpl>()->random64();
}

}  // namespace volt
