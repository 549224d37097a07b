#include "volt/distributed/byte_collectives.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>

namespace volt {
namespace {

at::Tensor byte_tensor(const std::string& bytes, int64_t length, c10::Device device) {
  at::Tensor host = at::zeros({length}, at::kByte);
  std::memcpy(host.data_ptr(), bytes.data(), std::min<size_t>(bytes.size(), static_cast<size_t>(length)));
  return host.to(device);
}

std::string text_of(const at::Tensor& t, int64_t length) {
  const at::Tensor host = t.to(c10::kCPU).contiguous();
  return std::string(static_cast<const char*>(host.data_ptr()), static_cast<size_t>(length));
}

}  // namespace

std::string broadcast_bytes(ProcessGroup& group, const std::string& bytes, int64_t src) {
  if (group.size() == 1) return bytes;
  const auto device = group.device();
  at::Tensor length = at::full({1}, static_cast<int64_t>(bytes.size()), at::kLong).to(device);
  group.broadcast(length, src);
  const int64_t n = length.to(c10::kCPU).item<int64_t>();
  at::Tensor payload = byte_tensor(group.rank() == src ? bytes : std::string(), n, device);
  group.broadcast(payload, src);
  return text_of(payload, n);
}

std::vector<std::string> all_gather_bytes(ProcessGroup& group, const std::string& bytes) {
  if (group.size() == 1) return {bytes};
  const auto device = group.device();
  const auto lengths =
      group.all_gather(at::full({1}, static_cast<int64_t>(bytes.size()), at::kLong).to(device));
  std::vector<int64_t> sizes;
  int64_t longest = 1;
  for (const auto& length : lengths) {
    sizes.push_back(length.to(c10::kCPU).item<int64_t>());
    longest = std::max(longest, sizes.back());
  }
  const auto payloads = group.all_gather(byte_tensor(bytes, longest, device));
  std::vector<std::string> out;
  for (size_t r = 0; r < payloads.size(); ++r) out.push_back(text_of(payloads[r], sizes[r]));
  return out;
}

}  // namespace volt
