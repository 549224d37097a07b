// libFuzzer harness for volt::SafetensorsReader.
//
// Each input is written to a per-process file in /dev/shm, opened, and every tensor it lists is read and
// every byte of it summed. The only acceptable failure is a volt::Error whose message names the file;
// anything else (another exception type, a sanitizer report, a tensor that disagrees with its header
// entry, a single allocation larger than 1 MiB + 64 x the input, a volt::Error message with a NUL byte)
// aborts, which libFuzzer reports as a crash.
//
// VOLT_FUZZ_OUTCOMES=<file>: append one line per input ("ok" or "error") for fuzz/replay.sh's summary.
#include <ATen/ATen.h>
#include <fcntl.h>
#include <sanitizer/allocator_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "volt/checkpoint/safetensors.h"
#include "volt/error.h"

namespace {

// ------------------------------------------------------------------ allocation watch (same in both fuzzers)
// No single allocation may exceed 1 MiB + kBytesPerInputByte x the input: a length or count read from the
// file must never size an allocation.
constexpr size_t kBytesPerInputByte = 64;
std::atomic<bool> g_watching{false};
std::atomic<size_t> g_allocation_limit{0};

void on_malloc(const volatile void* /*ptr*/, size_t size) {
  if (!g_watching.load(std::memory_order_relaxed) ||
      size <= g_allocation_limit.load(std::memory_order_relaxed))
    return;
  g_watching.store(false);  // no recursion from the report below
  char message[200];
  const int n = std::snprintf(message, sizeof message,
                              "\n==volt-fuzz== an allocation of %zu bytes exceeds the limit of %zu bytes "
                              "(1 MiB + %zu x the input) while parsing\n",
                              size, g_allocation_limit.load(), kBytesPerInputByte);
  if (n > 0) (void)!::write(2, message, static_cast<size_t>(n));
  __sanitizer_print_stack_trace();
  std::abort();
}
void on_free(const volatile void* /*ptr*/) {}

struct Watch {  // watches allocations while alive
  explicit Watch(size_t input_bytes) {
    g_allocation_limit.store((size_t{1} << 20) + kBytesPerInputByte * input_bytes);
    g_watching.store(true);
  }
  ~Watch() { g_watching.store(false); }
};

std::string g_path;

[[noreturn]] void defect(const std::string& what) {
  g_watching.store(false);
  if (!g_path.empty()) ::unlink(g_path.c_str());  // libFuzzer keeps the input itself
  std::fprintf(stderr, "\n==volt-fuzz== %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

FILE* g_outcomes = nullptr;

void write_input(const uint8_t* data, size_t size) {
  const int fd = ::open(g_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) defect("cannot create " + g_path + ": " + std::strerror(errno));
  for (size_t done = 0; done < size;) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) defect("cannot write " + g_path + ": " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

// libFuzzer runs an input a second time when it suspects a leak: count each input once.
void record(const uint8_t* data, size_t size, const char* outcome) {
  static std::string last;
  static bool any = false;
  if (g_outcomes == nullptr) return;
  std::string input(reinterpret_cast<const char*>(data), size);
  if (any && input == last) return;
  last = std::move(input);
  any = true;
  std::fprintf(g_outcomes, "%s\n", outcome);
  std::fflush(g_outcomes);
}

}  // namespace

// Every volt::Error is thrown by volt::detail::throw_error, which the fuzz build wraps (-Wl,--wrap, see
// CMakeLists.txt) to see the whole message: a NUL byte copied from the file into it would cut what()
// short, and the user would read the file's name but not the defect.
#define VOLT_THROW_ERROR \
  _ZN4volt6detail11throw_errorEPKciRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE
#define VOLT_CAT(a, b) VOLT_CAT2(a, b)
#define VOLT_CAT2(a, b) a##b
extern "C" [[noreturn]] void VOLT_CAT(__real_, VOLT_THROW_ERROR)(const char* file, int line,
                                                                 const std::string& message);
extern "C" [[noreturn]] void VOLT_CAT(__wrap_, VOLT_THROW_ERROR)(const char* file, int line,
                                                                 const std::string& message) {
  if (message.find('\0') != std::string::npos)
    defect("a volt::Error message holds a NUL byte, so what() ends early: " +
           message.substr(0, message.find('\0')));
  VOLT_CAT(__real_, VOLT_THROW_ERROR)(file, line, message);
}

namespace {

void check_error(const volt::Error& e) {
  const std::string message = e.what();
  if (message.find(g_path) == std::string::npos)
    defect("volt::Error does not name the file " + g_path + ": " + message.substr(0, 2000));
  if (message.size() < g_path.size() + 10) defect("volt::Error does not say what is wrong: " + message);
}

volatile uint64_t g_sink = 0;

uint64_t read_everything(const volt::SafetensorsReader& reader, size_t input_bytes) {
  uint64_t sum = 0;
  uint64_t covered = 0;
  for (const volt::TensorInfo& info : reader.tensors()) {
    if (info.begin != covered) defect("tensors() are not in file order or leave a hole");
    covered = info.end;
    at::Tensor t;
    {
      Watch watch(input_bytes);
      t = reader.tensor(info.name);
    }
    if (&reader.info(info.name) != &info) defect("info() and tensors() disagree");
    if (!t.defined() || t.scalar_type() != info.dtype || t.sizes() != c10::IntArrayRef(info.shape) ||
        !t.is_contiguous() || !t.device().is_cpu())
      defect("tensor '" + info.name + "' does not match its header entry");
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    if (nbytes != info.end - info.begin || nbytes > input_bytes)
      defect("tensor '" + info.name + "' has " + std::to_string(nbytes) + " bytes, its entry says " +
             std::to_string(info.end - info.begin));
    const auto* bytes = static_cast<const unsigned char*>(t.data_ptr());
    for (uint64_t i = 0; i < nbytes; ++i) sum += bytes[i];
  }
  for (const auto& [key, value] : reader.metadata()) sum += key.size() + value.size();
  // A missing name is an error that names the file too.
  try {
    (void)reader.tensor(std::string("\x01no such tensor", 15));
    if (!reader.contains(std::string("\x01no such tensor", 15)))
      defect("tensor() found a name contains() does not");
  } catch (const volt::Error& e) {
    check_error(e);
  }
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  const char* dir =
      ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp");
  g_path = std::string(dir) + "/volt-fuzz-safetensors-" + std::to_string(::getpid()) + ".safetensors";
  std::atexit([] { ::unlink(g_path.c_str()); });
  if (const char* outcomes = std::getenv("VOLT_FUZZ_OUTCOMES")) g_outcomes = std::fopen(outcomes, "a");
  __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
  // LibTorch's lazily built state is built here, outside the watch.
  float buffer[4] = {1, 2, 3, 4};
  at::Tensor t = at::from_blob(
      buffer, {2, 2}, [](void*) {}, at::TensorOptions().dtype(at::kFloat));
  at::Tensor e = at::empty({0, 3}, t.options());
  g_sink = g_sink + static_cast<uint64_t>(t.sum().item<float>()) + static_cast<uint64_t>(e.numel());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_input(data, size);
  const char* outcome = "ok";
  try {
    std::unique_ptr<volt::SafetensorsReader> reader;
    {
      Watch watch(size);
      reader = std::make_unique<volt::SafetensorsReader>(g_path);
    }
    g_sink = g_sink + read_everything(*reader, size);
  } catch (const volt::Error& e) {
    check_error(e);
    outcome = "error";
  } catch (const std::exception& e) {
    defect(std::string("SafetensorsReader threw something other than volt::Error: ") + e.what());
  } catch (...) {
    defect("SafetensorsReader threw something other than a std::exception");
  }
  record(data, size, outcome);
  return 0;
}
