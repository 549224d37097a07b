// The default CPU generator's state, read and set under its lock: what checkpoints save for an exact
// resume and what the distributed strategies make equal on every rank. Internal to volt.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <mutex>

namespace volt::detail {

inline at::Tensor cpu_rng_state() { return at::detail::getDefaultCPUGenerator().get_state(); }

inline void set_cpu_rng_state(const at::Tensor& state) {
  at::Generator generator = at::detail::getDefaultCPUGenerator();  // shares the default generator
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

}  // namespace volt::detail
