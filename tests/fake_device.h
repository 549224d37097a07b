// A stand-in accelerator for machines without a GPU: LibTorch's PrivateUse1 device ("privateuseone:0")
// backed by host memory. Tensors on it report that device, so code that would hand a CPU tensor to a
// GPU-only backend (NCCL) is caught on the CPU; every op runs LibTorch's own CPU kernel on CPU aliases of
// its arguments (same memory), and results come back on the fake device (views keep their storage, so
// storage identity — what the sharded strategies track — holds as on a real device).
//
//   volt::testing::enable_fake_device();
//   auto t = at::ones({3}).to(volt::testing::fake_device());  // t.device() == privateuseone:0
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/core/Allocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/nn/module.h>

#include <cstdlib>
#include <unordered_map>
#include <vector>

#include "volt/torch_compat.h"

#if VOLT_TORCH_AT_LEAST(2, 0)
#include <ATen/detail/PrivateUse1HooksInterface.h>
#endif

namespace volt::testing {

inline c10::Device fake_device() { return c10::Device(c10::kPrivateUse1, 0); }

namespace fake_detail {

struct Keep {
  c10::Storage storage;  // the memory a storage of the other device views
};
inline void drop(void* keep) { delete static_cast<Keep*>(keep); }

class HostAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) VOLT_ALLOCATOR_ALLOCATE_CONST override {
    void* data = bytes == 0 ? nullptr : std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    return {data, data, &std::free, fake_device()};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &std::free; }
  VOLT_ALLOCATOR_COPY_DATA_OVERRIDE
};
inline HostAllocator& host_allocator() {
  static HostAllocator allocator;
  return allocator;
}

// The same bytes as `source`, as a storage of `device` (kept alive by the new storage).
inline c10::Storage storage_on(const c10::Storage& source, c10::Device device) {
  void* data = source.unsafeGetStorageImpl()->data_ptr().get();
  c10::DataPtr pointer(data, new Keep{source}, &drop, device);
  return c10::Storage(c10::Storage::use_byte_size_t(), source.nbytes(), std::move(pointer),
                      device.is_cpu() ? nullptr : &host_allocator(), /*resizable=*/false);
}

inline at::Tensor tensor_over(const at::Tensor& like, c10::Storage storage) {
  const auto key = storage.device().is_cpu() ? c10::DispatchKey::CPU : c10::DispatchKey::PrivateUse1;
  auto out =
      at::detail::make_tensor<c10::TensorImpl>(std::move(storage), c10::DispatchKeySet(key), like.dtype());
  out.unsafeGetTensorImpl()->set_sizes_and_strides(like.sizes(), like.strides());
  out.unsafeGetTensorImpl()->set_storage_offset(like.storage_offset());
  return out;
}

inline bool on_fake(const at::Tensor& t) { return t.defined() && t.device().type() == c10::kPrivateUse1; }

// One op's translation: fake arguments to CPU aliases, CPU results back to the fake device.
struct Translation {
  std::vector<std::pair<at::Tensor, at::Tensor>> aliases;            // (fake original, CPU alias)
  std::unordered_map<const c10::StorageImpl*, c10::Storage> origin;  // CPU alias storage -> fake storage
  bool fake_input = false;
  c10::optional<c10::Device> asked_device;  // an explicit device argument

  c10::Storage to_host(const c10::Storage& storage) {
    c10::Storage alias = storage_on(storage, c10::kCPU);
    origin[alias.unsafeGetStorageImpl()] = storage;
    return alias;
  }
  at::Tensor to_host(const at::Tensor& t) {
    if (!on_fake(t)) return t;
    fake_input = true;
    at::Tensor alias = tensor_over(t, to_host(t.storage()));
    aliases.emplace_back(t, alias);
    return alias;
  }
  c10::IValue to_host(const c10::IValue& value) {
    if (value.isTensor()) return to_host(value.toTensor());
    if (value.isDevice() && value.toDevice().type() == c10::kPrivateUse1) {
      asked_device = value.toDevice();
      return c10::IValue(c10::Device(c10::kCPU));
    }
    if (value.isDevice()) asked_device = value.toDevice();
    if (value.isStorage()) {
      const c10::Storage storage = value.toStorage();
      return storage.device().type() == c10::kPrivateUse1 ? c10::IValue(to_host(storage)) : value;
    }
    if (value.isList()) {
      c10::impl::GenericList copy(value.toList().elementType());
      for (const c10::IValue& element : value.toListRef()) copy.push_back(to_host(element));
      return c10::IValue(std::move(copy));
    }
    return value;
  }
  c10::Storage back(const c10::Storage& storage) {
    auto it = origin.find(storage.unsafeGetStorageImpl());
    return it != origin.end() ? it->second : storage_on(storage, fake_device());
  }
  bool wants_fake() const { return asked_device ? asked_device->type() == c10::kPrivateUse1 : fake_input; }
  at::Tensor back(const at::Tensor& t) {
    if (!t.defined() || !t.device().is_cpu() || !wants_fake()) return t;
    for (const auto& [original, alias] : aliases)
      if (alias.unsafeGetTensorImpl() == t.unsafeGetTensorImpl()) return original;  // in place: self
    return tensor_over(t, back(t.storage()));
  }
  c10::IValue back(const c10::IValue& value) {
    if (value.isTensor()) return back(value.toTensor());
    if (value.isTensorList()) {
      c10::List<at::Tensor> out;
      for (const at::Tensor& t : value.toTensorVector()) out.push_back(back(t));
      return c10::IValue(std::move(out));
    }
    return value;
  }
  // Ops that change an argument's metadata in place (set_, as_strided_, resize_ ...) changed the alias.
  void sync_metadata() {
    for (auto& [original, alias] : aliases) {
      auto* impl = original.unsafeGetTensorImpl();
      if (alias.sizes() == original.sizes() && alias.strides() == original.strides() &&
          alias.storage_offset() == original.storage_offset() &&
          origin.count(alias.storage().unsafeGetStorageImpl()) &&
          origin.at(alias.storage().unsafeGetStorageImpl()).unsafeGetStorageImpl() ==
              original.storage().unsafeGetStorageImpl())
        continue;
      impl->set_storage_keep_dtype(back(alias.storage()));
      impl->set_sizes_and_strides(alias.sizes(), alias.strides());
      impl->set_storage_offset(alias.storage_offset());
    }
  }
};

inline void run_on_host(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const size_t count = op.schema().arguments().size();
  Translation translation;
  for (size_t i = stack->size() - count; i < stack->size(); ++i)
    (*stack)[i] = translation.to_host((*stack)[i]);
  // A copy between devices asks the non-CPU side's backend for _copy_from(self, dst): on host memory, a copy.
  const auto& name = op.schema().name();
  if (name == "aten::_copy_from" || name == "aten::_copy_from_and_resize") {
    const at::Tensor source = (*stack)[stack->size() - count].toTensor();
    at::Tensor target = (*stack)[stack->size() - count + 1].toTensor();
    if (name == "aten::_copy_from_and_resize") target.resize_(source.sizes());
    target.copy_(source);
    torch::jit::drop(*stack, count);
    if (op.schema().returns().size() == 1) torch::jit::push(*stack, target);
    translation.fake_input = true;
  } else {
    op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), stack);
  }
  const size_t returns = op.schema().returns().size();
  for (size_t i = stack->size() - returns; i < stack->size(); ++i)
    (*stack)[i] = translation.back((*stack)[i]);
  translation.sync_metadata();
}

// One device, one stream, no events: enough for autograd's engine to run backward on it.
struct HostGuard final : c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override { return c10::kPrivateUse1; }
  c10::Device exchangeDevice(c10::Device) const override { return fake_device(); }
  c10::Device getDevice() const override { return fake_device(); }
  void setDevice(c10::Device) const override {}
  void uncheckedSetDevice(c10::Device) const noexcept override {}
  c10::Stream getStream(c10::Device) const noexcept override {
    return c10::Stream(c10::Stream::DEFAULT, fake_device());
  }
  c10::Stream exchangeStream(c10::Stream) const noexcept override {
    return c10::Stream(c10::Stream::DEFAULT, fake_device());
  }
  c10::DeviceIndex deviceCount() const noexcept override { return 1; }
  void record(void**, const c10::Stream&, const c10::DeviceIndex, const c10::EventFlag) const override {}
  void block(void*, const c10::Stream&) const override {}
  bool queryEvent(void*) const override { return true; }
  bool queryStream(const c10::Stream&) const override { return true; }
  void synchronizeStream(const c10::Stream&) const override {}
#if VOLT_TORCH_AT_LEAST(2, 0)
  bool isStreamCapturing(const c10::Stream&) const override { return false; }
  void synchronizeEvent(void*) const override {}
  void synchronizeDevice(const c10::DeviceIndex) const override {}
#endif
};

#if VOLT_TORCH_AT_LEAST(2, 0)
// LibTorch 2.x asks the accelerator's hooks (autograd's streams, primary contexts): a registered
// PrivateUse1 backend is the accelerator even in a CUDA build (the arrangement PyTorch keeps for testing).
struct HostHooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  at::Device getDeviceFromPtr(void*) const override { return fake_device(); }
};
#endif

}  // namespace fake_detail

/// Registers the fake device (its boxed fallback and a device guard) once per process.
inline void enable_fake_device() {
  static const bool registered = [] {
    static c10::impl::DeviceGuardImplRegistrar guard(c10::kPrivateUse1, new fake_detail::HostGuard());
    static auto fallback = c10::Dispatcher::singleton().registerFallback(
        c10::DispatchKey::PrivateUse1,
        c10::KernelFunction::makeFromBoxedFunction<&fake_detail::run_on_host>(), "volt fake device");
#if VOLT_TORCH_AT_LEAST(2, 0)
    c10::register_privateuse1_backend("privateuseone");
    at::RegisterPrivateUse1HooksInterface(new fake_detail::HostHooks());
#endif
    return true;
  }();
  (void)registered;
}

/// `t` (on the fake device) as a CPU tensor over the same memory, and back: what a wrapper hands to a CPU
/// backend while it promises the fake device to its callers.
inline at::Tensor host_alias(const at::Tensor& t) {
  return fake_detail::on_fake(t)
             ? fake_detail::tensor_over(t, fake_detail::storage_on(t.storage(), c10::kCPU))
             : t;
}
inline at::Tensor fake_alias(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu()
             ? fake_detail::tensor_over(t, fake_detail::storage_on(t.storage(), fake_device()))
             : t;
}

/// Moves `module`'s parameters and buffers to the fake device, each keeping its TensorImpl (LibTorch
/// 1.13's set_data refuses a CPU -> PrivateUse1 move that it allows for CUDA).
inline void move_to_fake_device(torch::nn::Module& module) {
  enable_fake_device();
  for (auto tensors : {module.parameters(), module.buffers()})
    for (auto& t : tensors)
      if (!fake_detail::on_fake(t))
        t.unsafeGetTensorImpl()->shallow_copy_from(t.detach().to(fake_device()).getIntrusivePtr());
}

}  // namespace volt::testing
