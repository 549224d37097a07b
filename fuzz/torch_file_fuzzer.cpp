// libFuzzer harness for volt::TorchFileReader (torch.save zip + pickle files).
//
// Each input is written to a per-process file in /dev/shm and read twice: once as a user reads a
// checkpoint (contents() walked to the last tensor, every byte of every storage summed, every view's
// extent checked against its storage) and once in strict mode. The only acceptable failure is a
// volt::Error whose message names the file; anything else (another exception type, a sanitizer report, a
// single allocation larger than 1 MiB + kBytesPerInputByte x the input, a volt::Error message with a NUL
// byte) aborts, which libFuzzer reports as a crash.
//
// VOLT_FUZZ_OUTCOMES=<file>: append one line per input ("ok" or "error") for fuzz/replay.sh's summary.
#include <ATen/ATen.h>
#include <fcntl.h>
#include <sanitizer/allocator_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <unordered_set>

#include "volt/checkpoint/torch_file.h"
#include "volt/checkpoint/value.h"
#include "volt/error.h"

namespace {

// ------------------------------------------------------------------ allocation watch (same in both fuzzers)
// No single allocation may exceed 1 MiB + kBytesPerInputByte x the input: a length or count read from the
// file must never size an allocation. 64 bytes per input byte, except that a one-byte pickle opcode (DUP,
// EMPTY_LIST, MEMOIZE...) legitimately adds one volt::Value to a container, and a std::vector doubles as
// it grows: linear structures reach 2 x sizeof(volt::Value) (2 x 96) bytes per input byte. Hostile
// length fields ask for gigabytes and exabytes, far above either bound.
constexpr size_t kBytesPerInputByte = std::max<size_t>(64, 2 * sizeof(volt::Value));
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

// ---------------------------------------------------------------------------------------- the walk
volatile uint64_t g_sink = 0;

class Walker {
 public:
  explicit Walker(size_t input_bytes) : input_bytes_(input_bytes) {}

  // Shared containers are walked once: a pickle can build a DAG whose paths grow exponentially.
  void walk(const volt::Value& v, int depth) {
    if (depth > 5000) defect("contents() nests deeper than the unpickler's limit allows");
    switch (v.kind()) {
      case volt::ValueKind::kNone:
      case volt::ValueKind::kBool:
      case volt::ValueKind::kInt:
      case volt::ValueKind::kDouble:
        sum_ += static_cast<uint64_t>(v.kind());
        return;
      case volt::ValueKind::kString:
      case volt::ValueKind::kBytes: {
        const std::string& text = v.to_string();
        sum_ += text.size() + (text.empty() ? 0 : static_cast<unsigned char>(text.back()));
        return;
      }
      case volt::ValueKind::kTensor:
        tensor(v.to_tensor());
        return;
      default:
        break;
    }
    if (!seen_.insert(v.container_identity()).second) return;
    switch (v.kind()) {
      case volt::ValueKind::kList:
      case volt::ValueKind::kTuple:
        for (const volt::Value& item : v.items()) walk(item, depth + 1);
        return;
      case volt::ValueKind::kDict:
        for (const auto& [key, value] : v.to_dict()) {
          walk(key, depth + 1);
          walk(value, depth + 1);
          if (v.to_dict().find(key) == nullptr) defect("a dict cannot find its own key");
        }
        return;
      case volt::ValueKind::kObject: {
        const volt::Object& o = v.to_object();
        sum_ += o.module.size() + o.name.size();
        walk(o.args, depth + 1);
        walk(o.state, depth + 1);
        for (const volt::Value& item : o.appended) walk(item, depth + 1);
        for (const auto& [key, value] : o.set_items) {
          walk(key, depth + 1);
          walk(value, depth + 1);
        }
        return;
      }
      default:
        defect("unknown ValueKind");
    }
  }

  uint64_t sum() const { return sum_; }

 private:
  void tensor(const at::Tensor& t) {
    if (!t.defined()) defect("contents() holds an undefined tensor");
    if (!seen_.insert(t.unsafeGetTensorImpl()).second) return;
    if (!t.has_storage() || !t.device().is_cpu() || t.layout() != at::kStrided)
      defect("a tensor is not a strided CPU tensor with a storage");
    const c10::Storage& storage = t.storage();
    const size_t nbytes = storage.nbytes();
    if (nbytes > input_bytes_)
      defect("a storage of " + std::to_string(nbytes) + " bytes from a " + std::to_string(input_bytes_) +
             "-byte file");
    const auto* base = static_cast<const unsigned char*>(storage.data());
    if (nbytes > 0 && base == nullptr) defect("a storage has bytes but no data");
    if (seen_.insert(storage.unsafeGetStorageImpl()).second)
      for (size_t i = 0; i < nbytes; ++i) sum_ += base[i];

    // The view: every element it can reach must lie inside the storage.
    const int64_t item = static_cast<int64_t>(t.element_size());
    const int64_t offset = t.storage_offset();
    if (offset < 0) defect("negative storage offset");
    bool empty = false;
    for (int64_t d = 0; d < t.dim(); ++d)
      if (t.size(d) == 0) empty = true;
    if (empty || t.numel() == 0) {
      if (static_cast<uint64_t>(offset) * static_cast<uint64_t>(item) > nbytes)
        defect("an empty view's offset lies past its storage");
      return;
    }
    int64_t lowest = offset, highest = offset;
    for (int64_t d = 0; d < t.dim(); ++d) {
      int64_t span = 0;
      if (t.size(d) < 0 || __builtin_mul_overflow(t.size(d) - 1, t.stride(d), &span))
        defect("a view's sizes and strides overflow");
      if ((span < 0 ? __builtin_add_overflow(lowest, span, &lowest)
                    : __builtin_add_overflow(highest, span, &highest)))
        defect("a view's extent overflows");
    }
    int64_t end_byte = 0;
    if (lowest < 0 || __builtin_mul_overflow(highest + 1, item, &end_byte) ||
        static_cast<uint64_t>(end_byte) > nbytes)
      defect("a view (offset " + std::to_string(offset) + ", dim " + std::to_string(t.dim()) +
             ") reaches past its storage of " + std::to_string(nbytes) + " bytes");
    if (static_cast<const unsigned char*>(t.data_ptr()) != base + offset * item)
      defect("a view's data pointer is not its storage's plus its offset");
    sum_ += base[lowest * item] + base[end_byte - 1];
  }

  size_t input_bytes_;
  std::unordered_set<const void*> seen_;
  uint64_t sum_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  const char* dir =
      ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp");
  g_path = std::string(dir) + "/volt-fuzz-torch_file-" + std::to_string(::getpid()) + ".pt";
  std::atexit([] { ::unlink(g_path.c_str()); });
  if (const char* outcomes = std::getenv("VOLT_FUZZ_OUTCOMES")) g_outcomes = std::fopen(outcomes, "a");
  __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
  // LibTorch's lazily built state (dispatcher tables, autograd metadata) is built here, outside the watch.
  float buffer[4] = {1, 2, 3, 4};
  at::Tensor t = at::from_blob(
      buffer, {4}, [](void*) {}, at::TensorOptions().dtype(at::kFloat));
  at::Tensor v = at::empty({0}, t.options());
  v.set_(t.storage(), 1, {2}, {1});
  v.requires_grad_(true);
  g_sink = g_sink + static_cast<uint64_t>(v.sum().item<float>());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_input(data, size);
  const char* outcome = "ok";
  try {
    volt::Value contents;
    {
      Watch watch(size);
      volt::TorchFileReader reader(g_path);
      contents = reader.contents();
      (void)reader.records();
    }
    Walker walker(size);
    walker.walk(contents, 0);
    g_sink = g_sink + walker.sum();
  } catch (const volt::Error& e) {
    check_error(e);
    outcome = "error";
  } catch (const std::exception& e) {
    defect(std::string("TorchFileReader threw something other than volt::Error: ") + e.what());
  } catch (...) {
    defect("TorchFileReader threw something other than a std::exception");
  }
  // Strict mode takes other paths through the unpickler (it rejects rather than keeps unknown globals).
  try {
    Watch watch(size);
    volt::TorchFileReader reader(g_path, volt::TorchReadOptions().strict(true));
  } catch (const volt::Error& e) {
    check_error(e);
  } catch (const std::exception& e) {
    defect(std::string("TorchFileReader (strict) threw something other than volt::Error: ") + e.what());
  } catch (...) {
    defect("TorchFileReader (strict) threw something other than a std::exception");
  }
  record(data, size, outcome);
  return 0;
}
