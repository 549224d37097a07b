// The registry of skipped inits (init_record.h) and the public repair API (volt/init/uninitialized.h).
// Process-wide and locked: modules are often loaded after their scope closed, or on another thread.
#include "volt/init/uninitialized.h"

#include "init_record.h"
#include "storage_coverage.h"
#include "volt/config.h"
#include "weak_storage_map.h"

#include <ATen/core/stack.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/torch.h>

#include <mutex>
#include <unordered_map>
#include <unordered_set>

namespace volt {
namespace {

bool has_memory(const at::Tensor& t) { return t.defined() && t.has_storage() && !t.is_meta(); }

}  // namespace

namespace detail {

namespace {

// A storage's skipped inits, and the views of it marked initialized since.
struct Entry {
  std::vector<RecordedOp> ops;
  std::vector<ViewGeometry> filled;  // views marked initialized on a storage that is otherwise not
};

WeakStorageMap<Entry>& registry() {
  static auto* instance = new WeakStorageMap<Entry>(64);  // never destroyed: scopes may record at teardown
  return *instance;
}

void replay(const at::Tensor& base, const RecordedOp& op) {
  switch (op.kind) {
    case RecordedOp::Kind::kKeyedUniform: {
      at::Tensor view = op.target.on(base);
      keyed_uniform_(view, op.key, op.a, op.b);
      return;
    }
    case RecordedOp::Kind::kKeyedNormal: {
      at::Tensor view = op.target.on(base);
      keyed_normal_(view, op.key, op.a, op.b);
      return;
    }
    case RecordedOp::Kind::kBoxed: {
      torch::jit::Stack stack(op.args.begin(), op.args.end());
      for (const auto& [index, geometry] : op.on_storage) stack[index] = geometry.on(base);
      op.op->callBoxed(&stack);
      return;
    }
  }
}

}  // namespace

ViewGeometry ViewGeometry::of(const at::Tensor& view) {
  return {view.sizes().vec(), view.strides().vec(), view.storage_offset()};
}

at::Tensor ViewGeometry::on(const at::Tensor& base) const {
  return base.detach().as_strided(sizes, strides, offset);
}

void record_skipped_init(const at::Tensor& tensor, RecordedOp op, bool whole) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex());
  Entry* entry = &r.find_or_insert(tensor.storage());
  if (whole) {
    entry->ops.clear();
    entry->filled.clear();
  }
  entry->ops.push_back(std::move(op));
}

bool record_write(const c10::StorageImpl* storage, RecordedOp op) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex());
  Entry* entry = r.find(storage);
  if (entry == nullptr) return false;
  entry->ops.push_back(std::move(op));
  return true;
}

bool has_record(const c10::StorageImpl* storage) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex());
  return r.find(storage) != nullptr;
}

void erase_record(const c10::StorageImpl* storage) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex());
  r.erase(storage);
}

}  // namespace detail

namespace {

// Every parameter and buffer of `module` with memory, in named_parameters() then named_buffers() order.
std::vector<std::pair<std::string, at::Tensor>> named_tensors(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    if (has_memory(item.value())) out.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers(/*recurse=*/true))
    if (has_memory(item.value())) out.emplace_back(item.key(), item.value());
  return out;
}

// A copy of the record of `t`'s storage if `t` itself is still uninitialized (not inside a filled view).
c10::optional<detail::Entry> pending_record(const at::Tensor& t) {
  auto& r = detail::registry();
  std::lock_guard<std::mutex> lock(r.mutex());
  const detail::Entry* entry = r.find(t.storage().unsafeGetStorageImpl());
  if (entry == nullptr) return c10::nullopt;
  const auto geometry = detail::ViewGeometry::of(t);
  for (const auto& filled : entry->filled)
    if (filled == geometry) return c10::nullopt;
  return *entry;
}

}  // namespace

std::vector<std::string> uninitialized(const torch::nn::Module& module) {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : named_tensors(module))
    if (pending_record(tensor)) names.push_back(name);
  return names;
}

std::vector<std::string> initialize_uninitialized(torch::nn::Module& module) {
  // Replays run LibTorch's kernels directly: an init scope open on this thread (a load inside one) must
  // neither skip nor re-record them.
  c10::impl::ExcludeDispatchKeyGuard no_reentry(c10::DispatchKey::VOLT_INIT_DISPATCH_KEY);
  torch::NoGradGuard no_grad;
  std::vector<std::string> names;
  std::vector<std::pair<at::Tensor, detail::Entry>> repairs;  // one per storage: tied weights stay one
  std::unordered_set<const c10::StorageImpl*> seen;
  for (const auto& [name, tensor] : named_tensors(module)) {
    auto entry = pending_record(tensor);
    if (!entry) continue;
    names.push_back(name);
    if (seen.insert(tensor.storage().unsafeGetStorageImpl()).second)
      repairs.emplace_back(tensor, std::move(*entry));
  }
  for (const auto& [tensor, entry] : repairs) {
    // Filled views keep their values: the record's ops may write over them.
    std::vector<at::Tensor> kept;
    for (const auto& geometry : entry.filled) kept.push_back(geometry.on(tensor).clone());
    for (const auto& op : entry.ops) detail::replay(tensor, op);
    for (size_t i = 0; i < kept.size(); ++i) entry.filled[i].on(tensor).copy_(kept[i]);
    detail::erase_record(tensor.storage().unsafeGetStorageImpl());
  }
  return names;
}

void mark_initialized(const at::Tensor& tensor) {
  if (!has_memory(tensor)) return;
  auto& r = detail::registry();
  std::lock_guard<std::mutex> lock(r.mutex());
  const auto* storage = tensor.storage().unsafeGetStorageImpl();
  detail::Entry* entry = r.find(storage);
  if (entry == nullptr) return;
  if (detail::covers_storage(tensor))
    r.erase(storage);
  else
    entry->filled.push_back(detail::ViewGeometry::of(tensor));
}

}  // namespace volt
