// The registry of deferred records (deferred_record.h) and the capture of ops on deferred tensors.
// Process-wide and locked: a module built on one thread is often materialized on another.
#include "deferred_record.h"
#include "weak_storage_map.h"

#include "volt/error.h"

#include <c10/util/Exception.h>
#include <c10/util/intrusive_ptr.h>

#include <mutex>
#include <unordered_map>
#include <unordered_set>

namespace volt::detail {
namespace {

// The record outlives its entry while later records' calls refer to it.
WeakStorageMap<std::shared_ptr<DeferredRecord>>& registry() {
  // Never destroyed: scopes may record during static teardown.
  static auto* instance = new WeakStorageMap<std::shared_ptr<DeferredRecord>>(256);
  return *instance;
}

DeferredRecord* find_record(const c10::StorageImpl* storage) {
  auto* record = registry().find(storage);
  return record ? record->get() : nullptr;
}

const c10::StorageImpl* meta_storage(const at::Tensor& t) {
  return t.defined() && t.is_meta() && t.has_storage() ? t.storage().unsafeGetStorageImpl() : nullptr;
}

bool is_deferred_value(const c10::IValue& value) {
  auto& r = registry();
  if (value.isTensor()) {
    const auto* storage = meta_storage(value.toTensor());
    if (storage == nullptr) return false;
    std::lock_guard<std::mutex> lock(r.mutex());
    return find_record(storage) != nullptr;
  }
  if (value.isTensorList() || value.isList()) {
    for (const auto& element : value.toListRef())
      if (is_deferred_value(element)) return true;
  }
  return false;
}

// Ops whose result is a tensor's values (or a comparison of them) rather than a tensor.
const std::unordered_set<std::string>& value_reading_ops() {
  static const std::unordered_set<std::string> names{"aten::item",       "aten::_local_scalar_dense",
                                                     "aten::equal",      "aten::is_nonzero",
                                                     "aten::allclose",   "aten::tolist",
                                                     "aten::_copy_from", "aten::_copy_from_and_resize"};
  return names;
}

[[noreturn]] void fail_read(const c10::OperatorHandle& op, const std::string& detail) {
  VOLT_FAIL(op.schema().name(), detail,
            " reads the values of a tensor built under a deferred init scope (InitMode::kDeferred); it has "
            "no values until it is materialized: inside the scope compute from shapes only, or materialize "
            "the tensor first (volt::materialize, volt::materialize_module)");
}

}  // namespace

std::shared_ptr<const DeferredRecord> deferred_record(const at::Tensor& tensor) {
  const auto* storage = meta_storage(tensor);
  if (storage == nullptr) return nullptr;
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex());
  const auto* record = r.find(storage);
  return record ? *record : nullptr;
}

std::vector<DeferredWrite> deferred_writes(const DeferredRecord& record, size_t version) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex());
  const auto end =
      record.writes.begin() + static_cast<std::ptrdiff_t>(std::min(version, record.writes.size()));
  return {record.writes.begin(), end};
}

size_t deferred_version(const DeferredRecord& record) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex());
  return record.writes.size();
}

bool has_deferred_argument(const torch::jit::Stack& stack, size_t first) {
  for (size_t i = first; i < stack.size(); ++i)
    if (is_deferred_value(stack[i])) return true;
  return false;
}

namespace {

void record_deferred_creation(const at::Tensor& result, DeferredRecord record) {
  const auto* storage = meta_storage(result);
  if (storage == nullptr) return;
  record.dtype = result.scalar_type();
  record.numel = static_cast<int64_t>(result.storage().nbytes() / result.element_size());
  record.geometry = ViewGeometry::of(result);
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex());
  r.insert_or_assign(result.storage(), std::make_shared<DeferredRecord>(std::move(record)));
}

void record_deferred_write(const at::Tensor& target, DeferredWrite write) {
  const auto* storage = meta_storage(target);
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex());
  DeferredRecord* record = storage ? find_record(storage) : nullptr;
  if (record != nullptr) record->writes.push_back(std::move(write));
}

// An op on deferred tensors, captured before it runs: its replayable call and the deferred tensors it
// writes.
struct DeferredCapture {
  std::shared_ptr<DeferredCall> call;
  std::vector<std::pair<at::Tensor, ViewGeometry>> written;
};

DeferredCapture capture_deferred_call(const c10::OperatorHandle& op, const torch::jit::Stack& stack,
                                      size_t first, const std::vector<int>& written) {
  const auto& name = op.schema().name();
  if (value_reading_ops().count(name)) fail_read(op, "");
  DeferredCapture capture;
  capture.call = std::make_shared<DeferredCall>(DeferredCall{op, {}, {}});
  auto& call = *capture.call;
  auto ref_of = [](const at::Tensor& t) -> c10::optional<DeferredRef> {
    auto record = deferred_record(t);
    if (!record) return c10::nullopt;
    return DeferredRef{record, deferred_version(*record), ViewGeometry::of(t)};
  };
  for (size_t i = first; i < stack.size(); ++i) {
    const auto& value = stack[i];
    const size_t index = i - first;
    if (value.isDevice() && !value.toDevice().is_meta() && (name == "aten::to" || name == "aten::_to_copy"))
      fail_read(op, std::string(" to ") + value.toDevice().str());
    if (value.isTensor()) {
      const auto& t = value.toTensor();
      if (auto ref = ref_of(t)) {
        call.refs.push_back({index, -1, std::move(*ref)});
        call.args.emplace_back();
        continue;
      }
      if (t.defined() && !t.is_meta() && std::find(written.begin(), written.end(), index) != written.end())
        fail_read(op, " into a " + t.device().str() + " tensor");
      call.args.push_back(value);
    } else if (value.isTensorList()) {
      auto list = value.toTensorList().copy();
      for (size_t e = 0; e < list.size(); ++e) {
        if (auto ref = ref_of(list.get(e))) {
          call.refs.push_back({index, static_cast<int64_t>(e), std::move(*ref)});
          list.set(e, at::Tensor());
        }
      }
      call.args.emplace_back(std::move(list));
    } else if (value.isList()) {
      auto list = value.toList().copy();
      for (size_t e = 0; e < list.size(); ++e) {
        const c10::IValue element = list.get(e);
        if (!element.isTensor()) continue;
        if (auto ref = ref_of(element.toTensor())) {
          call.refs.push_back({index, static_cast<int64_t>(e), std::move(*ref)});
          list.set(e, c10::IValue());
        }
      }
      call.args.emplace_back(std::move(list));
    } else {
      call.args.push_back(value);
    }
  }
  for (const int index : written) {
    const auto& value = stack[first + static_cast<size_t>(index)];
    if (value.isTensor() && deferred_record(value.toTensor()))
      capture.written.emplace_back(value.toTensor(), ViewGeometry::of(value.toTensor()));
  }
  return capture;
}

void finish_deferred_call(DeferredCapture capture, const torch::jit::Stack& stack, size_t results_first) {
  for (const auto& [target, geometry] : capture.written) {
    DeferredWrite write;
    write.kind = DeferredWrite::Kind::kCall;
    write.target = geometry;
    write.call = capture.call;
    record_deferred_write(target, std::move(write));
  }
  // Results on new meta storages are computed by the call; results on existing ones are views.
  auto record_result = [&](const at::Tensor& t, size_t output, int64_t element) {
    if (meta_storage(t) == nullptr || deferred_record(t)) return;
    DeferredRecord record;
    record.source = DeferredRecord::Source::kCall;
    record.call = capture.call;
    record.output = output;
    record.element = element;
    record_deferred_creation(t, std::move(record));
  };
  for (size_t i = results_first; i < stack.size(); ++i) {
    const auto& value = stack[i];
    if (value.isTensor()) {
      record_result(value.toTensor(), i - results_first, -1);
    } else if (value.isTensorList()) {
      const auto list = value.toTensorList();
      for (size_t e = 0; e < list.size(); ++e)
        record_result(list.get(e), i - results_first, static_cast<int64_t>(e));
    }
  }
}

}  // namespace

void run_deferred_op(const c10::OperatorHandle& op, torch::jit::Stack* stack, size_t first,
                     DeferredOpKind kind, const std::vector<int>& written,
                     const std::function<RandomKey(const at::Tensor&)>& key_of,
                     const std::function<void()>& redispatch) {
  const size_t count = stack->size() - first;
  auto arg = [&](size_t index) -> const c10::IValue& { return (*stack)[first + index]; };
  const at::Tensor self = count > 0 && arg(0).isTensor() ? arg(0).toTensor() : at::Tensor();
  const bool self_deferred = self.defined() && deferred_record(self) != nullptr;
  const bool zero = op.schema().name() == "aten::zero_";
  const bool keyed = self_deferred && (kind.keyed_uniform || kind.keyed_normal) &&
                     counter_rng_supports(self.scalar_type()) && self.layout() == c10::kStrided;
  const bool constant = self_deferred && kind.fill && (zero || (count > 1 && arg(1).isScalar()));
  if (keyed || constant) {
    DeferredWrite write;
    write.target = ViewGeometry::of(self);
    write.whole = self.is_contiguous() && self.storage_offset() == 0 &&
                  static_cast<size_t>(self.numel()) * self.element_size() == self.storage().nbytes();
    if (keyed) {
      write.kind = kind.keyed_normal ? DeferredWrite::Kind::kKeyedNormal : DeferredWrite::Kind::kKeyedUniform;
      write.key = key_of(self);
      write.a = arg(1).toDouble();
      write.b = arg(2).toDouble();
    } else {
      write.kind = DeferredWrite::Kind::kConstant;
      write.value = zero ? c10::Scalar(0) : arg(1).toScalar();
    }
    record_deferred_write(self, std::move(write));
    return redispatch();
  }
  auto capture = capture_deferred_call(op, *stack, first, written);
  try {
    redispatch();
  } catch (const c10::Error& e) {
    // LibTorch lacks meta kernels for some ops (more in 1.13): say what that means here.
    const std::string message = e.what_without_backtrace();
    if (message.find("'Meta' backend") == std::string::npos) throw;
    VOLT_FAIL(
        op.schema().name(), " has no meta kernel in this LibTorch, so a deferred (or meta) init scope ",
        "cannot run it on deferred tensors: compute this tensor with other ops, or outside the scope and ",
        "register it afterwards. LibTorch said: ", message.substr(0, message.find('\n')));
  }
  finish_deferred_call(std::move(capture), *stack, stack->size() - op.schema().returns().size());
}

void run_deferred_factory(const c10::OperatorHandle& op, torch::jit::Stack* stack, size_t first,
                          DeferredRecord record, const std::function<void()>& redispatch,
                          const std::function<RandomKey(const at::Tensor&)>& assign_key) {
  if (record.source == DeferredRecord::Source::kCall)
    record.call = std::make_shared<DeferredCall>(
        DeferredCall{op, std::vector<c10::IValue>(stack->begin() + first, stack->end()), {}});
  redispatch();
  if (stack->empty() || !stack->back().isTensor()) return;
  record.key = assign_key(stack->back().toTensor());
  record_deferred_creation(stack->back().toTensor(), std::move(record));
}

}  // namespace volt::detail
