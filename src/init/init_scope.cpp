// The init engine: a boxed fallback on one dispatch key (VOLT_INIT_DISPATCH_KEY, DESIGN §3 and §7) that a
// scope switches on for its thread. It sees every op the thread dispatches inside the scope, before
// autograd, and rewrites or replaces the ones that create or randomly initialize tensors.
#include "volt/init/init_scope.h"

#include "deferred_record.h"
#include "init_counters.h"
#include "init_record.h"
#include "op_info.h"
#include "storage_coverage.h"
#include "volt/error.h"
#include "volt/init/counter_rng.h"
#include "volt/init/huge_page_allocator.h"

#include <ATen/EmptyTensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/torch.h>

#include <mutex>
#include <unordered_map>
#include <unordered_set>

namespace volt {
namespace detail {

// A tensor's creation index, tied to its storage; the weak reference keeps the StorageImpl's address
// from being reused by another tensor while the scope is open.
struct StorageKey {
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  uint64_t key;
};

// A keyed random fill not yet run. Layers' reset() initializes a weight and model code often overwrites
// it right away (GPT-2's init after Linear's kaiming init): with keyed values the first fill can simply
// be dropped, because no value depends on another draw. The fill runs as soon as anything else touches
// the storage, and at the latest when the scope closes.
struct PendingFill {
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> tensor;
  bool normal;
  double a, b;
  RandomKey key;
};

struct ScopeFrame {
  InitOptions options;
  uint64_t seed = 0;
  uint64_t next_key = 0;
  std::unordered_map<const c10::StorageImpl*, StorageKey> keys;
  std::unordered_map<const c10::StorageImpl*, PendingFill> pending;
  // Storages whose random init this scope skipped (empty mode): later writes to them are recorded, so
  // that a repair replays them too (init_record.h). A set per thread, so unrelated ops take no lock.
  std::unordered_set<const c10::StorageImpl*> tracked;
  ScopeFrame* parent = nullptr;
};

}  // namespace detail

namespace {

using detail::DtypeRule;
using detail::op_info;
using detail::OpInfo;
using detail::OpKind;
using detail::OwnAlloc;
using detail::PendingFill;
using detail::RecordedOp;
using detail::replace_arguments;
using detail::result_is_default_float;
using detail::ScopeFrame;
using detail::StorageKey;
using detail::ViewGeometry;
using Stack = torch::jit::Stack;

constexpr c10::DispatchKey kInitKey = c10::DispatchKey::VOLT_INIT_DISPATCH_KEY;

thread_local ScopeFrame* tls_top = nullptr;

struct KeyOwner {
  ScopeFrame* frame;
  uint64_t key;
};

// The stream of creation index `key` in `frame`: its seed and its stream definition.
RandomKey random_key(const ScopeFrame& frame, uint64_t key) {
  return {frame.seed, key, frame.options.stream()};
}

void register_key(ScopeFrame& frame, const at::Tensor& tensor, uint64_t key) {
  if (!tensor.defined() || !tensor.has_storage()) return;
  const auto& storage = tensor.storage();
  frame.keys.insert_or_assign(storage.unsafeGetStorageImpl(), StorageKey{storage.getWeakStorageImpl(), key});
}

// The stream a tensor draws from: the scope that created it, or (for tensors made elsewhere) a new key
// in the innermost scope, so that repeated runs of the same code still draw the same values.
KeyOwner key_for(ScopeFrame& innermost, const at::Tensor& tensor) {
  const auto* storage = tensor.storage().unsafeGetStorageImpl();
  for (auto* frame = &innermost; frame != nullptr; frame = frame->parent) {
    auto it = frame->keys.find(storage);
    if (it != frame->keys.end() && !it->second.storage.expired()) return {frame, it->second.key};
  }
  const auto key = innermost.next_key++;
  register_key(innermost, tensor, key);
  return {&innermost, key};
}

// Meta and deferred scopes build tensors with no memory.
bool builds_meta(const InitOptions& options) {
  return options.mode() == InitMode::kMeta || options.mode() == InitMode::kDeferred;
}

// Empty mode draws the same keyed values as materialize for what it does not skip (buffers, rand/randn
// factories) and records the same keys for what it skips: both modes give a tensor the same values.
bool counter_rng_serves(const ScopeFrame& frame, const at::Tensor& t) {
  if (builds_meta(frame.options) || frame.options.rng() != InitRng::kCounter) return false;
  if (!counter_rng_supports(t.scalar_type()) || t.layout() != c10::kStrided) return false;
  return t.device().is_cpu() || (VOLT_WITH_CUDA && t.device().is_cuda());
}

at::Tensor allocate(const OpInfo& info, const ScopeFrame& frame, const Stack& stack, size_t first,
                    c10::ScalarType dtype, c10::Device device) {
  const auto size = stack[first + info.size].toIntVector();
  c10::optional<c10::MemoryFormat> memory_format;
  if (info.memory_format >= 0 && !stack[first + info.memory_format].isNone())
    memory_format = stack[first + info.memory_format].toMemoryFormat();
  const int64_t bytes = c10::multiply_integers(size) * static_cast<int64_t>(c10::elementSize(dtype));
  const bool huge =
      device.is_cpu() && frame.options.huge_pages() && bytes >= static_cast<int64_t>(kHugePageThreshold);
  if (device.is_cpu() && !huge) detail::count_allocation(/*huge_pages=*/false, bytes);  // at::empty's
  const c10::DispatchKeySet cpu_keys(c10::DispatchKey::CPU);
  // Materialized tensors are written next, by all threads: fault their pages in from this one first.
  auto* huge_page_memory = huge_page_allocator(
      frame.options.mode() == InitMode::kMaterialize ? HugePageFaulting::kPrefault : HugePageFaulting::kLazy);
  if (info.own_alloc == OwnAlloc::kEmptyStrided) {
    const auto stride = stack[first + info.stride].toIntVector();
    if (huge) return at::detail::empty_strided_generic(size, stride, huge_page_memory, cpu_keys, dtype);
    return at::empty_strided(size, stride, at::TensorOptions().dtype(dtype).device(device));
  }
  if (huge) return at::detail::empty_generic(size, huge_page_memory, cpu_keys, dtype, memory_format);
  return at::empty(size, at::TensorOptions().dtype(dtype).device(device), memory_format);
}

// True when the engine can build this factory's result itself: one it knows, dense, unpinned, with
// concrete sizes.
bool own_alloc_applies(const OpInfo& info, const Stack& stack, size_t first) {
  if (info.own_alloc == OwnAlloc::kNone || info.size < 0) return false;
  if (!stack[first + info.size].isIntList()) return false;  // symbolic sizes: leave them to ATen
  if (info.stride >= 0 && !stack[first + info.stride].isIntList()) return false;
  if (info.layout >= 0 && !stack[first + info.layout].isNone() &&
      stack[first + info.layout].toLayout() != c10::kStrided)
    return false;
  return info.pin_memory < 0 || stack[first + info.pin_memory].isNone() ||
         !stack[first + info.pin_memory].toBool();
}

// Builds a factory's result itself when that saves work: huge pages for large CPU tensors (a fresh
// mapping is already zero), the keyed generator for rand/randn. Returns false to let ATen build it.
bool build_factory(const OpInfo& info, ScopeFrame& frame, Stack* stack, size_t first, size_t count,
                   c10::ScalarType dtype, c10::Device device) {
  if (builds_meta(frame.options) || !own_alloc_applies(info, *stack, first)) return false;
  if (!device.is_cpu() && info.own_alloc != OwnAlloc::kRand && info.own_alloc != OwnAlloc::kRandn)
    return false;
  const auto& stack_ref = *stack;

  at::Tensor result = allocate(info, frame, stack_ref, first, dtype, device);
  const auto key = frame.next_key++;
  register_key(frame, result, key);
  switch (info.own_alloc) {
    case OwnAlloc::kZeros:
      if (!is_huge_page_allocation(result.storage().data_ptr())) result.zero_();
      break;
    case OwnAlloc::kOnes:
      result.fill_(1);
      break;
    case OwnAlloc::kFull:
      result.fill_(stack_ref[first + info.fill_value].toScalar());
      break;
    case OwnAlloc::kRand:
      if (counter_rng_serves(frame, result))
        keyed_uniform_(result, random_key(frame, key), 0.0, 1.0);
      else
        result.uniform_(0.0, 1.0);
      break;
    case OwnAlloc::kRandn:
      if (counter_rng_serves(frame, result))
        keyed_normal_(result, random_key(frame, key), 0.0, 1.0);
      else
        result.normal_(0.0, 1.0);
      break;
    case OwnAlloc::kEmpty:
    case OwnAlloc::kEmptyStrided:
    case OwnAlloc::kNone:
      break;
  }
  replace_arguments(stack, count, std::move(result));
  return true;
}

void redispatch(const c10::OperatorHandle& op, c10::DispatchKeySet keys, Stack* stack) {
  op.redispatchBoxed(keys & c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, kInitKey), stack);
}

void run_fill(const at::Tensor& tensor, const PendingFill& fill) {
  at::NoGradGuard no_grad;
  at::Tensor target = tensor;
  if (fill.normal)
    keyed_normal_(target, fill.key, fill.a, fill.b);
  else
    keyed_uniform_(target, fill.key, fill.a, fill.b);
}

void flush_pending(ScopeFrame& frame, const c10::StorageImpl* storage) {
  auto it = frame.pending.find(storage);
  if (it == frame.pending.end()) return;
  const PendingFill fill = std::move(it->second);
  frame.pending.erase(it);
  if (auto impl = fill.tensor.lock()) run_fill(at::Tensor(std::move(impl)), fill);
}

void flush_all_pending(ScopeFrame& frame) {
  while (!frame.pending.empty()) flush_pending(frame, frame.pending.begin()->first);
}

bool any_pending(const ScopeFrame* frame) {
  for (; frame != nullptr; frame = frame->parent)
    if (!frame->pending.empty()) return true;
  return false;
}

// Before an op reads or writes a tensor with a pending fill, the fill runs; except when the op is itself
// a fill that rewrites the whole storage (`overwritten`), which makes the pending one dead.
void settle_pending(ScopeFrame* innermost, const c10::IValue& value, const c10::StorageImpl* overwritten) {
  if (value.isTensor()) {
    const auto& t = value.toTensor();
    if (!t.defined() || !t.has_storage()) return;
    const auto* storage = t.storage().unsafeGetStorageImpl();
    for (auto* frame = innermost; frame != nullptr; frame = frame->parent) {
      if (storage == overwritten)
        frame->pending.erase(storage);
      else
        flush_pending(*frame, storage);
    }
  } else if (value.isTensorList() || value.isList()) {
    for (const auto& element : value.toListRef()) settle_pending(innermost, element, overwritten);
  }
}

bool any_tracked(const ScopeFrame* frame) {
  for (; frame != nullptr; frame = frame->parent)
    if (!frame->tracked.empty()) return true;
  return false;
}

bool is_tracked(const ScopeFrame* frame, const c10::StorageImpl* storage) {
  for (; frame != nullptr; frame = frame->parent)
    if (frame->tracked.count(storage)) return detail::has_record(storage);
  return false;
}

void untrack(ScopeFrame* frame, const c10::StorageImpl* storage) {
  for (; frame != nullptr; frame = frame->parent) frame->tracked.erase(storage);
}

const c10::StorageImpl* storage_of(const c10::IValue& value) {
  if (!value.isTensor()) return nullptr;
  const auto& t = value.toTensor();
  return t.defined() && t.has_storage() ? t.storage().unsafeGetStorageImpl() : nullptr;
}

// The op with its arguments as a record replays it; arguments on `storage` are kept as view geometry
// only, so the record does not keep the module's memory alive.
RecordedOp boxed_record(const c10::OperatorHandle& op, const Stack& stack, size_t first,
                        const c10::StorageImpl* storage) {
  RecordedOp record;
  record.kind = RecordedOp::Kind::kBoxed;
  record.op = op;
  for (size_t i = first; i < stack.size(); ++i) {
    if (storage_of(stack[i]) == storage) {
      record.on_storage.emplace_back(i - first, ViewGeometry::of(stack[i].toTensor()));
      record.args.emplace_back();
    } else {
      record.args.push_back(stack[i]);
    }
  }
  return record;
}

// A write inside the scope to a storage whose init was skipped: a whole-storage constant fill or copy
// initializes it (the record is dead); any other write is recorded, to be replayed after the init.
void track_writes(ScopeFrame* frame, const c10::OperatorHandle& op, const OpInfo& info, const Stack& stack,
                  size_t first) {
  for (const int index : info.written) {
    const auto* storage = storage_of(stack[first + index]);
    if (storage == nullptr || !is_tracked(frame, storage)) continue;
    const auto& target = stack[first + index].toTensor();
    const bool overwrites = detail::covers_storage(target) &&
                            (info.kind == OpKind::kFill ||
                             (info.kind == OpKind::kCopy && index == 0 &&
                              (stack.size() - first < 2 || storage_of(stack[first + 1]) != storage)));
    if (overwrites) {
      detail::erase_record(storage);
      untrack(frame, storage);
    } else if (!detail::record_write(storage, boxed_record(op, stack, first, storage))) {
      untrack(frame, storage);
    }
  }
}

// What a deferred factory's result holds before any write: what build_factory would have put there
// (`self_built`), else (kCall) what replaying the factory on the target device gives.
detail::DeferredRecord deferred_source(const OpInfo& info, const ScopeFrame& frame, const Stack& stack,
                                       size_t first, bool self_built, c10::ScalarType dtype) {
  using Source = detail::DeferredRecord::Source;
  const auto own = self_built ? info.own_alloc : OwnAlloc::kNone;
  const bool keyed = frame.options.rng() == InitRng::kCounter && counter_rng_supports(dtype);
  detail::DeferredRecord record;
  record.source = own == OwnAlloc::kEmpty || own == OwnAlloc::kEmptyStrided ? Source::kEmpty
                  : own == OwnAlloc::kZeros || own == OwnAlloc::kOnes || own == OwnAlloc::kFull
                      ? Source::kConstant
                  : own == OwnAlloc::kRand && keyed  ? Source::kKeyedUniform
                  : own == OwnAlloc::kRandn && keyed ? Source::kKeyedNormal
                                                     : Source::kCall;
  record.value = own == OwnAlloc::kFull ? stack[first + info.fill_value].toScalar()
                                        : c10::Scalar(own == OwnAlloc::kOnes ? 1 : 0);
  record.b = 1.0;  // rand: U[0, 1), randn: N(0, 1)
  return record;
}

void init_fallback(const c10::OperatorHandle& op, c10::DispatchKeySet keys, Stack* stack) {
  // Nothing below this op (ATen's own kernels, our fills) is intercepted again.
  c10::impl::ExcludeDispatchKeyGuard no_reentry(kInitKey);
  ScopeFrame* frame = tls_top;
  const OpInfo& info = op_info(op);
  const size_t count = op.schema().arguments().size();
  const size_t first = stack->size() - count;
  auto arg = [&](int index) -> c10::IValue& { return (*stack)[first + static_cast<size_t>(index)]; };

  if (frame != nullptr && any_pending(frame) && info.kind != OpKind::kFactory) {
    const at::Tensor* self = count > 0 && arg(0).isTensor() ? &arg(0).toTensor() : nullptr;
    const bool rewrites_self = self && self->defined() && detail::covers_storage(*self) &&
                               (info.kind == OpKind::kFill ||
                                (info.kind == OpKind::kCopy && count > 1 && arg(1).isTensor() &&
                                 !arg(1).toTensor().storage().is_alias_of(self->storage())) ||
                                ((info.kind == OpKind::kUniform || info.kind == OpKind::kNormal) &&
                                 counter_rng_serves(*frame, *self)));
    const c10::StorageImpl* overwritten = rewrites_self ? self->storage().unsafeGetStorageImpl() : nullptr;
    for (size_t i = first; i < stack->size(); ++i) settle_pending(frame, (*stack)[i], overwritten);
  }
  if (frame == nullptr) return redispatch(op, keys, stack);
  if (info.kind != OpKind::kFactory && detail::has_deferred_argument(*stack, first)) {
    const bool keyed =
        (info.generator < 0 || arg(info.generator).isNone()) && frame->options.rng() == InitRng::kCounter;
    const detail::DeferredOpKind kind{keyed && info.kind == OpKind::kUniform,
                                      keyed && info.kind == OpKind::kNormal, info.kind == OpKind::kFill};
    const auto key_of = [frame](const at::Tensor& t) {
      const auto owner = key_for(*frame, t);
      return random_key(*owner.frame, owner.key);
    };
    return detail::run_deferred_op(op, stack, first, kind, info.written, key_of,
                                   [&] { redispatch(op, keys, stack); });
  }
  const bool random_op = info.kind == OpKind::kUniform || info.kind == OpKind::kNormal ||
                         info.kind == OpKind::kOtherRandomInPlace;
  if (!random_op && info.kind != OpKind::kFactory && any_tracked(frame))
    track_writes(frame, op, info, *stack, first);
  if (info.kind == OpKind::kOther || info.kind == OpKind::kFill || info.kind == OpKind::kCopy)
    return redispatch(op, keys, stack);

  if (info.kind == OpKind::kFactory) {
    const auto& options = frame->options;
    if (options.device() && arg(info.device).isNone()) arg(info.device) = c10::IValue(*options.device());
    if (options.dtype() && info.dtype >= 0 && arg(info.dtype).isNone() &&
        result_is_default_float(info, *stack, first))
      arg(info.dtype) = c10::IValue(static_cast<int64_t>(*options.dtype()));
    const c10::Device device =
        arg(info.device).isNone() ? c10::Device(c10::kCPU) : arg(info.device).toDevice();
    const c10::ScalarType dtype = info.dtype >= 0 && !arg(info.dtype).isNone()
                                      ? arg(info.dtype).toScalarType()
                                      : c10::typeMetaToScalarType(c10::get_default_dtype());
    // With no dtype named, only default-float factories have a dtype known here; ATen infers the rest.
    const bool dtype_known =
        info.dtype_rule == DtypeRule::kDefaultFloat || (info.dtype >= 0 && !arg(info.dtype).isNone());
    const bool no_generator = info.generator < 0 || arg(info.generator).isNone();
    if (dtype_known && no_generator && build_factory(info, *frame, stack, first, count, dtype, device))
      return;
    if (options.mode() == InitMode::kDeferred) {
      const bool self_built = dtype_known && no_generator && own_alloc_applies(info, *stack, first);
      return detail::run_deferred_factory(
          op, stack, first, deferred_source(info, *frame, *stack, first, self_built, dtype),
          [&] { redispatch(op, keys, stack); },
          [frame](const at::Tensor& t) {
            const auto key = frame->next_key++;
            register_key(*frame, t, key);
            return random_key(*frame, key);
          });
    }
    redispatch(op, keys, stack);
    if (!stack->empty() && stack->back().isTensor())
      register_key(*frame, stack->back().toTensor(), frame->next_key++);
    return;
  }

  at::Tensor self = arg(0).toTensor();
  const bool keyed_op = info.kind == OpKind::kUniform || info.kind == OpKind::kNormal;
  const bool no_generator = info.generator < 0 || arg(info.generator).isNone();
  if (frame->options.mode() == InitMode::kEmpty && self.has_storage() && !self.is_meta() &&
      (self.requires_grad() || is_tracked(frame, self.storage().unsafeGetStorageImpl()))) {
    // A parameter's random init: skipped, its memory stays as allocated (a checkpoint will fill it), and
    // recorded with the key a materializing scope would draw from, so that a repair gives the same bits.
    const auto* storage = self.storage().unsafeGetStorageImpl();
    RecordedOp record;
    if (keyed_op && no_generator && counter_rng_serves(*frame, self)) {
      const auto owner = key_for(*frame, self);
      record.kind =
          info.kind == OpKind::kNormal ? RecordedOp::Kind::kKeyedNormal : RecordedOp::Kind::kKeyedUniform;
      record.target = ViewGeometry::of(self);
      record.key = random_key(*owner.frame, owner.key);
      record.a = arg(1).toDouble();
      record.b = arg(2).toDouble();
    } else {
      record = boxed_record(op, *stack, first, storage);
    }
    detail::record_skipped_init(self, std::move(record), detail::covers_storage(self));
    frame->tracked.insert(storage);
    return replace_arguments(stack, count, std::move(self));
  }
  if (keyed_op && no_generator && counter_rng_serves(*frame, self)) {
    const auto owner = key_for(*frame, self);
    const RandomKey key = random_key(*owner.frame, owner.key);
    PendingFill fill{
        c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(self.getIntrusivePtr()),
        info.kind == OpKind::kNormal, arg(1).toDouble(), arg(2).toDouble(), key};
    if (detail::covers_storage(self))
      frame->pending.insert_or_assign(self.storage().unsafeGetStorageImpl(), std::move(fill));
    else
      run_fill(self, fill);
    return replace_arguments(stack, count, std::move(self));
  }
  redispatch(op, keys, stack);
}

void ensure_fallback_registered() {
  static auto registration = c10::Dispatcher::singleton().registerFallback(
      kInitKey, c10::KernelFunction::makeFromBoxedFunction<&init_fallback>(), "volt init scope");
}

std::unique_ptr<ScopeFrame> open_frame(InitOptions options) {
  ensure_fallback_registered();  // before the key is switched on for this thread
  VOLT_CHECK(!options.device() || options.device()->is_cpu() || options.device()->is_cuda() ||
                 options.device()->is_meta(),
             "init scopes place tensors on cpu, cuda or meta devices, not ", *options.device());
  if (builds_meta(options)) options.device(c10::Device(c10::kMeta));
  auto frame = std::make_unique<ScopeFrame>();
  frame->options = std::move(options);
  frame->parent = tls_top;
  return frame;
}

}  // namespace

InitScope::InitScope(InitOptions options) : frame_(open_frame(std::move(options))), include_(kInitKey) {
  if (frame_->options.seed())
    frame_->seed = *frame_->options.seed();
  else if (frame_->options.rng() == InitRng::kCounter)
    frame_->seed = seed_from_libtorch();
  tls_top = frame_.get();
}

InitScope::~InitScope() {
  try {
    c10::impl::ExcludeDispatchKeyGuard no_reentry(kInitKey);
    flush_all_pending(*frame_);
  } catch (const std::exception& e) {
    TORCH_WARN("volt::InitScope could not run a deferred init fill: ", e.what());
  }
  if (tls_top == frame_.get()) {
    tls_top = frame_->parent;
    // The enclosing scope's code may still write what this one skipped (a padding row, a rescale).
    if (tls_top != nullptr) tls_top->tracked.insert(frame_->tracked.begin(), frame_->tracked.end());
  } else {
    TORCH_WARN(
        "volt::InitScope destroyed out of order or on another thread; scopes must be destroyed "
        "innermost first on the thread that opened them");
  }
}

const InitOptions& InitScope::options() const { return frame_->options; }

uint64_t InitScope::seed() const { return frame_->seed; }

uint64_t InitScope::tensors_created() const { return frame_->next_key; }

c10::optional<InitOptions> current_init_options() {
  if (tls_top == nullptr) return c10::nullopt;
  return tls_top->options;
}

}  // namespace volt
