// Materialization of deferred tensors (volt/init/deferred_init.h) from their records (deferred_record.h):
// keyed and constant fills computed for a span of storage positions alone, everything else replayed.
#include "volt/init/deferred_init.h"

#include "deferred_record.h"
#include "storage_coverage.h"
#include "volt/config.h"
#include "volt/error.h"
#include "volt/init/counter_rng.h"
#include "volt/init/huge_page_allocator.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/torch.h>

#include <map>
#include <unordered_map>

namespace volt {
namespace {

using detail::DeferredCall;
using detail::DeferredRecord;
using detail::DeferredRef;
using detail::DeferredWrite;
using detail::ViewGeometry;
using Source = DeferredRecord::Source;
using Kind = DeferredWrite::Kind;

constexpr c10::DispatchKey kInitKey = c10::DispatchKey::VOLT_INIT_DISPATCH_KEY;

int64_t numel_of(const ViewGeometry& g) { return c10::multiply_integers(g.sizes); }

bool is_contiguous(const ViewGeometry& g) {
  int64_t expected = 1;
  for (auto d = static_cast<int64_t>(g.sizes.size()) - 1; d >= 0; --d) {
    if (g.sizes[d] == 0) return true;
    if (g.sizes[d] != 1 && g.strides[d] != expected) return false;
    expected *= g.sizes[d];
  }
  return true;
}

// The storage positions [first, last) a view's elements lie within.
std::pair<int64_t, int64_t> bounds(const ViewGeometry& g) {
  int64_t lowest = g.offset, highest = g.offset;
  for (size_t d = 0; d < g.sizes.size(); ++d) {
    const int64_t reach = (g.sizes[d] - 1) * g.strides[d];
    (reach < 0 ? lowest : highest) += reach;
  }
  return {lowest, highest + 1};
}

// Storage positions of all elements of `g`, in row-major order (the view's size in memory).
at::Tensor storage_positions(const ViewGeometry& g, const at::TensorOptions& options) {
  at::Tensor positions = at::full({}, g.offset, options);
  for (size_t d = 0; d < g.sizes.size(); ++d)
    positions = positions.unsqueeze(-1) + at::arange(g.sizes[d], options) * g.strides[d];
  return positions.reshape({-1});
}

// Storage positions of elements [begin, end) of `g`'s row-major flattening.
at::Tensor element_positions(const ViewGeometry& g, int64_t begin, int64_t end,
                             const at::TensorOptions& options) {
  at::Tensor index = at::arange(begin, end, options);
  at::Tensor positions = at::full({end - begin}, g.offset, options);
  for (auto d = static_cast<int64_t>(g.sizes.size()) - 1; d >= 0; --d) {
    positions += index.remainder(g.sizes[d]) * g.strides[d];
    index = index.div(g.sizes[d], "floor");
  }
  return positions;
}

// A sliceable record's creation as a write over its storage.
DeferredWrite creation_as_write(const DeferredRecord& r) {
  DeferredWrite w;
  w.target = {{r.numel}, {1}, 0};
  w.whole = true;
  if (r.source == Source::kEmpty || r.source == Source::kConstant) {
    w.kind = Kind::kConstant;
    w.value = r.source == Source::kEmpty ? c10::Scalar(0) : r.value;
  } else if (r.source == Source::kKeyedUniform || r.source == Source::kKeyedNormal) {
    w.kind = r.source == Source::kKeyedUniform ? Kind::kKeyedUniform : Kind::kKeyedNormal;
    w.target = r.geometry;
    w.whole = is_contiguous(r.geometry) && r.geometry.offset == 0 && numel_of(r.geometry) == r.numel;
    w.key = r.key;
    w.a = r.a;
    w.b = r.b;
  }
  return w;
}

// The writes that decide a record's values at `version`: from the last one that rewrote the whole storage,
// or from its creation when none did.
struct Plan {
  std::vector<DeferredWrite> writes;  // the record's first `version` writes
  size_t begin = 0;                   // the first that matters
  bool from_creation = true;
  bool sliceable = true;  // only keyed and constant fills: any span can be computed alone
};

Plan plan_of(const DeferredRecord& r, size_t version) {
  Plan plan;
  plan.writes = detail::deferred_writes(r, version);
  for (size_t i = plan.writes.size(); i-- > 0;) {
    if (plan.writes[i].whole) {
      plan.begin = i;
      plan.from_creation = false;
      break;
    }
  }
  plan.sliceable = !(plan.from_creation && r.source == Source::kCall);
  for (size_t i = plan.begin; i < plan.writes.size(); ++i)
    if (plan.writes[i].kind == Kind::kCall) plan.sliceable = false;
  return plan;
}

// Writes what keyed or constant write `w` puts at storage positions [first, first + part.numel()).
void fill_positions(const DeferredWrite& w, int64_t first, at::Tensor& part) {
  switch (w.kind) {
    case Kind::kKeyedUniform:
      return fill_uniform_slice(part, w.key, first, w.a, w.b);
    case Kind::kKeyedNormal:
      return fill_normal_slice(part, w.key, first, w.a, w.b);
    case Kind::kConstant:
      part.fill_(w.value);
      return;
    case Kind::kCall:
      break;
  }
  VOLT_FAIL("internal error: a replayed op reached volt's slice fill; please report this");
}

// Applies keyed or constant write `w` to `work`, which holds storage positions [lo, lo + work.numel()).
void apply_to_span(const DeferredWrite& w, int64_t lo, at::Tensor& work) {
  const int64_t hi = lo + work.numel();
  if (numel_of(w.target) == 0) return;
  const auto [first, last] = bounds(w.target);
  if (last <= lo || first >= hi) return;
  if (is_contiguous(w.target)) {
    const int64_t begin = std::max(lo, first), end = std::min(hi, last);
    at::Tensor part = work.narrow(0, begin - lo, end - begin);
    return fill_positions(w, begin, part);
  }
  // A strided view (a column block, a transposed write): its positions within the span.
  at::Tensor positions = storage_positions(w.target, work.options().dtype(at::kLong));
  positions = positions.masked_select((positions >= lo).logical_and(positions < hi));
  if (positions.numel() == 0) return;
  if (w.kind == Kind::kConstant) {
    work.index_fill_(0, positions - lo, w.value);
    return;
  }
  const int64_t low = positions.min().item<int64_t>(), high = positions.max().item<int64_t>() + 1;
  at::Tensor values = at::empty({high - low}, work.options());
  fill_positions(w, low, values);
  work.index_copy_(0, positions - lo, values.index_select(0, positions - low));
}

// Fills `work` with storage positions [lo, lo + work.numel()) of a sliceable plan. `zeros`: work already
// holds zeros (a fresh mapping).
void fill_span(const DeferredRecord& r, const Plan& plan, int64_t lo, at::Tensor& work, bool zeros = false) {
  if (plan.from_creation) {
    const DeferredWrite creation = creation_as_write(r);
    // An integral zero only: a fresh mapping holds +0.0, and fill_(-0.0) would not.
    const bool zero_fill = creation.kind == Kind::kConstant &&
                           creation.value.isIntegral(/*includeBool=*/true) && creation.value.toLong() == 0;
    if (!creation.whole && !zeros) work.zero_();
    if (!(zeros && zero_fill && creation.whole)) apply_to_span(creation, lo, work);
  }
  for (size_t i = plan.begin; i < plan.writes.size(); ++i) apply_to_span(plan.writes[i], lo, work);
}

// Flat memory for `r`'s storage on `device`; huge pages for large CPU storages, faulted in by the init
// threads since all of it is written next. Sets `zeros` when it is a fresh (zero) mapping.
at::Tensor allocate(const DeferredRecord& r, c10::Device device, bool* zeros) {
  const auto nbytes = static_cast<size_t>(r.numel) * c10::elementSize(r.dtype);
  *zeros = false;
  if (device.is_cpu() && nbytes >= kHugePageThreshold) {
    at::Tensor flat =
        at::detail::empty_generic({r.numel}, huge_page_allocator(HugePageFaulting::kPrefault),
                                  c10::DispatchKeySet(c10::DispatchKey::CPU), r.dtype, c10::nullopt);
    *zeros = is_huge_page_allocation(flat.storage().data_ptr());
    return flat;
  }
  return at::empty({r.numel}, at::TensorOptions().dtype(r.dtype).device(device));
}

// Materializes whole storages for one request, each (record, version) once, so that tensors sharing a
// storage share the result and replayed ops see the inputs they saw at record time.
class Materializer {
 public:
  explicit Materializer(c10::Device device) : device_(device) {}

  // The storage of `r` after its first `version` writes, as a flat tensor on the device.
  at::Tensor storage(const std::shared_ptr<const DeferredRecord>& r, size_t version) {
    const auto key = std::make_pair(r.get(), version);
    if (auto it = storages_.find(key); it != storages_.end()) return it->second;
    held_.push_back(r);
    const Plan plan = plan_of(*r, version);
    bool zeros = false;
    at::Tensor flat;
    if (plan.sliceable) {
      flat = allocate(*r, device_, &zeros);
      fill_span(*r, plan, 0, flat, zeros);
    } else {
      if (plan.from_creation && r->source == Source::kCall) {
        flat = created_by_call(*r, /*copy=*/plan.begin < plan.writes.size());
      } else {
        flat = allocate(*r, device_, &zeros);
        if (plan.from_creation) fill_span(*r, Plan{{}, 0, true, true}, 0, flat, zeros);
      }
      for (size_t i = plan.begin; i < plan.writes.size(); ++i) {
        const auto& w = plan.writes[i];
        if (w.kind == Kind::kCall)
          run(*w.call, r.get(), i, flat);
        else
          apply_to_span(w, 0, flat);
      }
    }
    storages_.emplace(key, flat);
    return flat;
  }

  at::Tensor view(const DeferredRef& ref) { return ref.geometry.on(storage(ref.record, ref.version)); }

 private:
  // Replays `call` on materialized arguments; arguments that are `self` at `self_version` are views of
  // `self_storage`, the storage being built (the call writes it).
  torch::jit::Stack run(const DeferredCall& call, const DeferredRecord* self, size_t self_version,
                        const at::Tensor& self_storage) {
    torch::jit::Stack stack(call.args.begin(), call.args.end());
    for (auto& value : stack)
      if (value.isDevice() && value.toDevice().is_meta()) value = c10::IValue(device_);
    for (const auto& slot : call.refs) {
      at::Tensor t = slot.ref.record.get() == self && slot.ref.version == self_version
                         ? slot.ref.geometry.on(self_storage)
                         : view(slot.ref);
      auto& arg = stack[slot.arg];
      if (slot.element < 0) {
        arg = std::move(t);
      } else if (arg.isTensorList()) {
        auto list = arg.toTensorList().copy();
        list.set(static_cast<size_t>(slot.element), std::move(t));
        arg = std::move(list);
      } else {
        auto list = arg.toList().copy();
        list.set(static_cast<size_t>(slot.element), c10::IValue(std::move(t)));
        arg = std::move(list);
      }
    }
    call.op.callBoxed(&stack);
    return stack;
  }

  // The storage of a tensor an op computed: the replayed result itself where it lies in memory as the
  // meta result did (and `copy` is false: nothing writes it next), else copied into place.
  at::Tensor created_by_call(const DeferredRecord& r, bool copy) {
    auto it = results_.find(r.call.get());
    if (it == results_.end()) it = results_.emplace(r.call.get(), run(*r.call, nullptr, 0, {})).first;
    VOLT_CHECK(r.output < it->second.size(), "internal error: replaying ", r.call->op.schema().name(),
               " gave fewer results than it did on the meta device; please report this");
    const c10::IValue& value = it->second[r.output];
    at::Tensor result =
        r.element >= 0 ? value.toTensorList().get(static_cast<size_t>(r.element)) : value.toTensor();
    VOLT_CHECK(result.scalar_type() == r.dtype, "replaying ", r.call->op.schema().name(),
               " for a deferred tensor gave ", result.scalar_type(), " where the meta device gave ", r.dtype,
               ": build this tensor with an explicit dtype, or outside the deferred scope");
    const bool in_place = ViewGeometry::of(result) == r.geometry &&
                          result.device().type() == device_.type() &&
                          result.storage().nbytes() == static_cast<size_t>(r.numel) * result.element_size();
    if (in_place && !copy) return result.detach().as_strided({r.numel}, {1}, 0);
    bool zeros = false;
    at::Tensor flat = allocate(r, device_, &zeros);
    if (!zeros) flat.zero_();
    r.geometry.on(flat).copy_(result);
    return flat;
  }

  c10::Device device_;
  std::map<std::pair<const DeferredRecord*, size_t>, at::Tensor> storages_;
  std::unordered_map<const DeferredCall*, torch::jit::Stack> results_;
  std::vector<std::shared_ptr<const DeferredRecord>> held_;  // keeps the keys of storages_ unique
};

std::shared_ptr<const DeferredRecord> checked_record(const at::Tensor& tensor, const char* what) {
  VOLT_CHECK(tensor.defined(), what, " got an undefined tensor");
  auto record = detail::deferred_record(tensor);
  VOLT_CHECK(record, what, " needs a tensor built under a deferred init scope (InitMode::kDeferred), got a ",
             tensor.device(), " tensor",
             tensor.is_meta()
                 ? " from a meta scope, which records nothing: build it under InitMode::kDeferred"
                 : ": it already has values, use it as it is");
  return record;
}

}  // namespace

bool is_deferred(const at::Tensor& tensor) { return detail::deferred_record(tensor) != nullptr; }

void materialize_slice(const at::Tensor& tensor, int64_t begin, int64_t end, at::Tensor& out) {
  const auto record = checked_record(tensor, "volt::materialize_slice");
  VOLT_CHECK(0 <= begin && begin <= end && end <= tensor.numel(), "volt::materialize_slice: range [", begin,
             ", ", end, ") is not within the tensor's ", tensor.numel(), " elements");
  VOLT_CHECK(out.defined() && out.is_contiguous() && out.numel() == end - begin,
             "volt::materialize_slice: out must be a contiguous tensor of end - begin = ", end - begin,
             " elements; got ", out.defined() ? out.sizes() : c10::IntArrayRef{},
             out.defined() && !out.is_contiguous() ? " (not contiguous)" : "");
  if (begin == end) return;
  // Volt's own work: an init scope open on this thread must not intercept it.
  const c10::impl::ExcludeDispatchKeyGuard no_init_scope(kInitKey);
  const at::NoGradGuard no_grad;
  const size_t version = detail::deferred_version(*record);
  const Plan plan = plan_of(*record, version);
  const ViewGeometry geometry = ViewGeometry::of(tensor);
  const c10::Device device = out.is_cpu() || out.is_cuda() ? out.device() : c10::Device(c10::kCPU);
  const bool direct = out.scalar_type() == record->dtype && out.device() == device;
  at::Tensor work = direct
                        ? out.view({end - begin})
                        : at::empty({end - begin}, at::TensorOptions().dtype(record->dtype).device(device));
  if (!plan.sliceable) {
    // A replayed op decides some values: materialize the storage whole (DESIGN §3) and slice it.
    Materializer materializer(device);
    work.copy_(
        geometry.on(materializer.storage(record, version)).reshape({-1}).narrow(0, begin, end - begin));
  } else if (is_contiguous(geometry)) {
    fill_span(*record, plan, geometry.offset + begin, work);
  } else {
    // The elements sit at scattered storage positions: fill the span they cover, then gather them.
    const at::Tensor positions =
        element_positions(geometry, begin, end, at::TensorOptions().dtype(at::kLong).device(device));
    const int64_t low = positions.min().item<int64_t>(), high = positions.max().item<int64_t>() + 1;
    at::Tensor span = at::empty({high - low}, work.options());
    fill_span(*record, plan, low, span);
    work.copy_(span.index_select(0, positions - low));
  }
  if (!direct) out.view({end - begin}).copy_(work);
}

at::Tensor materialize(const at::Tensor& tensor, c10::Device device) {
  const auto record = checked_record(tensor, "volt::materialize");
  const c10::impl::ExcludeDispatchKeyGuard no_init_scope(kInitKey);
  const at::NoGradGuard no_grad;
  if (!detail::covers_storage(tensor)) {
    // A view of a larger storage: only its own elements.
    at::Tensor out =
        at::empty(tensor.sizes(), at::TensorOptions().dtype(tensor.scalar_type()).device(device));
    materialize_slice(tensor, 0, tensor.numel(), out);
    return out;
  }
  Materializer materializer(device);
  return ViewGeometry::of(tensor).on(materializer.storage(record, detail::deferred_version(*record)));
}

std::vector<std::string> materialize_module(torch::nn::Module& module, c10::Device device) {
  const c10::impl::ExcludeDispatchKeyGuard no_init_scope(kInitKey);
  const at::NoGradGuard no_grad;
  Materializer materializer(device);
  std::vector<std::string> names;
  // Per TensorImpl: a tied weight is one tensor under several names and stays one.
  std::vector<std::pair<c10::TensorImpl*, at::Tensor>> swaps;
  std::unordered_map<const c10::TensorImpl*, bool> seen;
  auto visit = [&](const std::string& name, const at::Tensor& t) {
    if (!t.defined()) return;
    auto* impl = t.unsafeGetTensorImpl();
    if (auto it = seen.find(impl); it != seen.end()) {
      if (it->second) names.push_back(name);
      return;
    }
    const auto record = detail::deferred_record(t);
    seen.emplace(impl, record != nullptr);
    if (!record) return;
    names.push_back(name);
    at::Tensor storage = materializer.storage(record, detail::deferred_version(*record));
    swaps.emplace_back(impl, ViewGeometry::of(t).on(storage));
  };
  for (const auto& item : module.named_parameters(/*recurse=*/true)) visit(item.key(), item.value());
  for (const auto& item : module.named_buffers(/*recurse=*/true)) visit(item.key(), item.value());
  // Swapped only once everything is computed: records look tensors up by their meta storage.
  for (auto& [impl, real] : swaps) impl->shallow_copy_from(real.getIntrusivePtr());
  return names;
}

}  // namespace volt
