// Built with USE_C10D_GLOO (and USE_C10D_NCCL in a CUDA build) against the gloo headers of Debian's
// libgloo-dev on both LibTorch legs; see DESIGN §7 for why that is safe with the PyPI wheel.
#include "volt/distributed/process_group.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#if VOLT_WITH_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#include "rendezvous.h"
#include "volt/error.h"
#include "volt/torch_compat.h"

namespace volt {
namespace {

using Clock = std::chrono::steady_clock;
using detail::local_address_towards;
using detail::message_of;
using detail::Peer;
using detail::process_gone;
using detail::seconds;
using detail::this_host;

class C10dGroup;

// What a world group and every subgroup it makes share.
struct World {
  using MakeBackend = std::function<c10::intrusive_ptr<compat::C10dBackend>(
      const c10::intrusive_ptr<c10d::Store>& store, int rank, int size)>;
  c10::intrusive_ptr<c10d::Store> store;  // the process's store; each group under its own prefix
  std::string where;
  std::chrono::milliseconds timeout;
  std::string backend_name;
  c10::Device device;
  MakeBackend make_backend;
};

class Work final : public CollectiveWork {
 public:
  using Finish = std::function<void()>;
  Work(std::shared_ptr<const C10dGroup> group, c10::intrusive_ptr<c10d::Work> work, const char* op,
       Finish finish)
      : group_(std::move(group)), work_(std::move(work)), op_(op), finish_(std::move(finish)) {}
  void wait() override;

 private:
  std::shared_ptr<const C10dGroup> group_;
  c10::intrusive_ptr<c10d::Work> work_;
  const char* op_;
  Finish finish_;
  bool done_ = false;
};

class C10dGroup final : public ProcessGroup, public std::enable_shared_from_this<C10dGroup> {
 public:
  C10dGroup(std::shared_ptr<const World> world, c10::intrusive_ptr<compat::C10dBackend> backend,
            std::string prefix, int64_t rank, std::vector<Peer> peers, std::vector<int64_t> global_ranks)
      : world_(std::move(world)),
        backend_(std::move(backend)),
        prefix_(std::move(prefix)),
        backend_name_(world_->backend_name),
        rank_(rank),
        size_(static_cast<int64_t>(peers.size())),
        peers_(std::move(peers)),
        global_ranks_(std::move(global_ranks)),
        where_(world_->where),
        timeout_(world_->timeout) {}

  int64_t rank() const override { return rank_; }
  int64_t size() const override { return size_; }
  std::string backend() const override { return backend_name_; }
  c10::Device device() const override { return world_->device; }
  int64_t global_rank(int64_t rank) const override {
    VOLT_CHECK(rank >= 0 && rank < size_, "rank ", rank, " is not in a group of ", size_);
    return global_ranks_[rank];
  }

  std::shared_ptr<ProcessGroup> new_group(const std::vector<int64_t>& ranks) override {
    std::vector<bool> seen(size_, false);
    for (int64_t r : ranks) {
      VOLT_CHECK(r >= 0 && r < size_ && !seen[r], "new_group(", c10::IntArrayRef(ranks), "): ranks must be ",
                 "distinct ranks of this group of ", size_, " (0..", size_ - 1, ")");
      seen[r] = true;
    }
    VOLT_CHECK(!ranks.empty(), "new_group of no ranks: pass the ranks of the new group");
    // Every rank numbers its new_group calls alike, so members meet under the same prefix.
    const std::string prefix = prefix_ + "/sub" + std::to_string(subgroups_++);
    auto at = std::find(ranks.begin(), ranks.end(), rank_);
    if (at == ranks.end()) return nullptr;
    const int64_t rank = at - ranks.begin();
    std::vector<Peer> peers;
    std::vector<int64_t> global;
    for (int64_t r : ranks) {
      peers.push_back(peers_[r]);
      global.push_back(global_ranks_[r]);
    }
    auto store = c10::make_intrusive<c10d::PrefixStore>(prefix, world_->store);
    detail::join_subgroup(store, rank, global, timeout_, where_);
    try {
      auto backend = world_->make_backend(store, static_cast<int>(rank), static_cast<int>(ranks.size()));
      return std::make_shared<C10dGroup>(world_, backend, prefix, rank, std::move(peers), std::move(global));
    } catch (const volt::Error&) {
      throw;
    } catch (const std::exception& error) {
      VOLT_FAIL("global rank ", global_ranks_[rank_], " could not connect its ", backend_name_,
                " subgroup of global ranks ", c10::IntArrayRef(global), " (timeout ", seconds(timeout_),
                "): ", message_of(error), ". A member may have died after joining; see its output");
    }
  }

  void all_reduce(at::Tensor& tensor, ReduceOp op) override { all_reduce_async(tensor, op)->wait(); }

  std::unique_ptr<CollectiveWork> all_reduce_async(at::Tensor& tensor, ReduceOp op) override {
    VOLT_CHECK(tensor.defined(), "all_reduce of an undefined tensor: pass the tensor to reduce");
    check_device("all_reduce", tensor);
    VOLT_CHECK(op != ReduceOp::kMean || at::isFloatingType(tensor.scalar_type()),
               "all_reduce with kMean needs a floating tensor, got ", tensor.scalar_type(),
               ": reduce with kSum and divide by size() yourself, or convert the tensor to float");
    const bool gloo = backend_name_ == "gloo";
    // Gloo cannot reduce 16-bit floats (1.13) nor average: reduce in float32, then divide and cast back.
    const bool widen = gloo && (tensor.scalar_type() == at::kBFloat16 || tensor.scalar_type() == at::kHalf);
    const bool divide = op == ReduceOp::kMean && gloo;
    at::Tensor buffer = widen ? tensor.to(at::kFloat).contiguous() : tensor.contiguous();
    const bool copy_back = widen || !buffer.is_same(tensor);
    c10d::AllreduceOptions options;
    options.reduceOp = reduce_op(op, gloo);
    options.timeout = timeout_;
    std::vector<at::Tensor> tensors{buffer};
    auto work = run("all_reduce", [&] { return backend_->allreduce(tensors, options); });
    const auto size = size_;
    at::Tensor target = tensor;
    return std::make_unique<Work>(shared_from_this(), work, "all_reduce", [=]() mutable {
      if (divide) buffer.div_(static_cast<double>(size));
      if (copy_back) target.copy_(buffer);
    });
  }

  void broadcast(at::Tensor& tensor, int64_t src) override {
    VOLT_CHECK(src >= 0 && src < size_, "broadcast from rank ", src, " in a group of ", size_,
               ": pass a source rank in 0..", size_ - 1);
    check_device("broadcast", tensor);
    at::Tensor buffer = transportable(tensor.contiguous());
    c10d::BroadcastOptions options;
    options.rootRank = src;
    options.timeout = timeout_;
    std::vector<at::Tensor> tensors{buffer};
    complete("broadcast", [&] { return backend_->broadcast(tensors, options); });
    if (!tensor.is_contiguous()) tensor.copy_(buffer.view(tensor.scalar_type()));
  }

  std::vector<at::Tensor> all_gather(const at::Tensor& tensor) override {
    check_device("all_gather", tensor);
    at::Tensor input = transportable(tensor.contiguous());
    // The list form: Gloo in 1.13 has no _allgather_base.
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int64_t i = 0; i < size_; ++i) outputs[0].push_back(at::empty_like(input));
    std::vector<at::Tensor> inputs{input};
    c10d::AllgatherOptions options;
    options.timeout = timeout_;
    complete("all_gather", [&] { return backend_->allgather(outputs, inputs, options); });
    std::vector<at::Tensor> gathered;
    for (auto& output : outputs[0]) gathered.push_back(output.view(tensor.scalar_type()));
    return gathered;
  }

  at::Tensor reduce_scatter(const at::Tensor& input, ReduceOp op) override {
    VOLT_CHECK(input.dim() >= 1 && input.size(0) % size_ == 0, "reduce_scatter splits dim 0 into ", size_,
               " equal chunks, but the input has shape ", input.sizes(), ": pad dim 0 to a multiple of ",
               size_);
    check_device("reduce_scatter", input);
    const int64_t chunk = input.size(0) / size_;
    if (backend_name_ == "gloo") {
      // Gloo has no reduce_scatter in 1.13: all-reduce the whole input, keep this rank's chunk. That moves
      // size() times the bytes of a real reduce-scatter; one path on both legs.
      at::Tensor whole = input.clone();
      all_reduce(whole, op);
      return whole.narrow(0, rank_ * chunk, chunk).clone();
    }
    std::vector<std::vector<at::Tensor>> inputs(1);
    for (int64_t i = 0; i < size_; ++i) inputs[0].push_back(input.narrow(0, i * chunk, chunk).contiguous());
    std::vector<at::Tensor> outputs{at::empty_like(inputs[0][0])};
    c10d::ReduceScatterOptions options;
    options.reduceOp = reduce_op(op, false);
    options.timeout = timeout_;
    complete("reduce_scatter", [&] { return backend_->reduce_scatter(outputs, inputs, options); });
    return outputs[0];
  }

  void barrier() override {
    c10d::BarrierOptions options;
    options.timeout = timeout_;
    complete("barrier", [&] { return backend_->barrier(options); });
  }

  // A collective failed: name the op, this rank, the ranks that are gone (for peers on this host, by the
  // pids they published) and the timeout, with LibTorch's own words last.
  [[noreturn]] void fail(const char* op, const std::string& cause) const {
    std::vector<int64_t> gone;
    std::vector<int64_t> remote;
    const std::string host = this_host();
    // A peer that broke the connection may still be tearing down: look again for a moment.
    const auto deadline = Clock::now() + std::chrono::milliseconds(500);
    do {
      gone.clear();
      remote.clear();
      for (int64_t r = 0; r < size_; ++r) {
        if (r == rank_) continue;
        if (peers_[r].host != host)
          remote.push_back(r);
        else if (process_gone(peers_[r].pid))
          gone.push_back(r);
      }
      if (!gone.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (Clock::now() < deadline);
    std::ostringstream message;
    message << op << " failed on rank " << rank_ << " of " << size_ << " (" << backend_name_;
    if (subgroup()) message << ", subgroup of global ranks " << c10::IntArrayRef(global_ranks_);
    message << ", timeout " << seconds(timeout_) << ", rendezvous at " << where_ << "): ";
    if (!gone.empty()) {
      for (size_t i = 0; i < gone.size(); ++i)
        message << (i ? ", " : "") << (subgroup() ? "global rank " : "rank ") << global_ranks_[gone[i]]
                << " (pid " << peers_[gone[i]].pid << ")";
      message << (gone.size() == 1 ? " is" : " are") << " gone";
    } else {
      message << "no rank on this host has exited";
    }
    if (!remote.empty()) {
      message << "; rank";
      for (size_t i = 0; i < remote.size(); ++i)
        message << (i ? ", " : " ") << global_ranks_[remote[i]] << " (" << peers_[remote[i]].host << ")";
      message << " on other hosts not checked";
    }
    message << ". Every rank must run the same collectives in the same order; a rank that died or is stuck "
               "stops the others. LibTorch said: "
            << cause;
    VOLT_FAIL(message.str());
  }

 private:
  bool subgroup() const {
    for (int64_t r = 0; r < size_; ++r)
      if (global_ranks_[r] != r) return true;
    return false;
  }

  // NCCL takes CUDA tensors of its device only; Gloo here takes CPU tensors. Say so before c10d does.
  void check_device(const char* op, const at::Tensor& tensor) const {
    const c10::Device device = world_->device;
    const bool same =
        tensor.device().type() == device.type() &&
        (!device.has_index() || !tensor.device().has_index() || tensor.device().index() == device.index());
    VOLT_CHECK(same, op, " of a tensor on ", tensor.device(), " in a ", backend_name_,
               " group whose tensors live on ", device, ": move it there first (tensor.to(group.device()))");
  }

  static c10d::ReduceOp reduce_op(ReduceOp op, bool gloo) {
    switch (op) {
      case ReduceOp::kSum:
        return c10d::ReduceOp::SUM;
      case ReduceOp::kMean:
        return gloo ? c10d::ReduceOp::SUM : c10d::ReduceOp::AVG;
      case ReduceOp::kMax:
        return c10d::ReduceOp::MAX;
      case ReduceOp::kMin:
        return c10d::ReduceOp::MIN;
    }
    return c10d::ReduceOp::SUM;
  }

  // Data movement does not care about the meaning of the bits: bfloat16 travels as float16 and bool as
  // uint8 over Gloo, which moves neither in LibTorch 1.13 (nor int16). The result is a view: writes reach
  // `tensor`.
  at::Tensor transportable(const at::Tensor& tensor) const {
    if (backend_name_ != "gloo") return tensor;
    if (tensor.scalar_type() == at::kBFloat16) return tensor.view(at::kHalf);
    if (tensor.scalar_type() == at::kBool) return tensor.view(at::kByte);
    return tensor;
  }

  template <typename Start>
  c10::intrusive_ptr<c10d::Work> run(const char* op, Start&& start) const {
    try {
      return start();
    } catch (const volt::Error&) {
      throw;
    } catch (const std::exception& error) {
      fail(op, message_of(error));
    }
  }

  template <typename Start>
  void complete(const char* op, Start&& start) const {
    auto work = run(op, std::forward<Start>(start));
    Work(shared_from_this(), work, op, nullptr).wait();
  }

  std::shared_ptr<const World> world_;
  c10::intrusive_ptr<compat::C10dBackend> backend_;
  std::string prefix_;
  std::string backend_name_;
  int64_t rank_;
  int64_t size_;
  std::vector<Peer> peers_;
  std::vector<int64_t> global_ranks_;
  std::string where_;
  std::chrono::milliseconds timeout_;
  int64_t subgroups_ = 0;  // new_group calls so far
};

void Work::wait() {
  if (done_) return;
  done_ = true;
  try {
    work_->wait();
  } catch (const volt::Error&) {
    throw;
  } catch (const std::exception& error) {
    group_->fail(op_, message_of(error));
  }
  if (finish_) finish_();
}

}  // namespace

std::shared_ptr<ProcessGroup> ProcessGroup::create(const ClusterEnvironment& env, c10::DeviceType device,
                                                   std::chrono::milliseconds timeout) {
  VOLT_CHECK(env.world_size >= 1 && env.global_rank >= 0 && env.global_rank < env.world_size,
             "cannot create a process group for rank ", env.global_rank, " of ", env.world_size,
             ": pass the environment from ClusterEnvironment::detect or SubprocessLauncher::launch");
  VOLT_CHECK(timeout.count() > 0, "the process group timeout must be positive, got ", timeout.count(), " ms");
  VOLT_CHECK(device == c10::kCPU || device == c10::kCUDA, "no process group backend for device type ", device,
             ": use kCPU (Gloo) or kCUDA (NCCL)");
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);

  detail::Joined joined = detail::join_world(env, timeout, where);
  const int rank = static_cast<int>(env.global_rank);
  const int size = static_cast<int>(env.world_size);
  auto world = std::make_shared<World>(World{
      joined.store, where, timeout, device == c10::kCUDA ? "nccl" : "gloo", c10::Device(c10::kCPU), nullptr});
  try {
    if (device == c10::kCUDA) {
#if VOLT_WITH_C10D_NCCL
      world->device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
      c10::cuda::set_device(world->device.index());
      world->make_backend = [timeout](const c10::intrusive_ptr<c10d::Store>& store, int r, int n) {
        auto options = c10d::ProcessGroupNCCL::Options::create();
        options->timeout = timeout;
        return c10::intrusive_ptr<compat::C10dBackend>(
            c10::make_intrusive<c10d::ProcessGroupNCCL>(store, r, n, options));
      };
#else
      VOLT_FAIL(
          "this build of volt has no NCCL process group (LibTorch ", compat::torch_version(),
          " without CUDA, or built without nvcc): use a CUDA build of LibTorch for device kCUDA, or kCPU");
#endif
    } else {
      std::shared_ptr<::gloo::transport::Device> gloo_device;
      if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
          interface != nullptr && *interface != '\0') {
        const std::string first(interface, std::strcspn(interface, ","));
        gloo_device = c10d::ProcessGroupGloo::createDeviceForInterface(first);
      } else {
        gloo_device = c10d::ProcessGroupGloo::createDeviceForHostname(local_address_towards(env.master_addr));
      }
      world->make_backend = [timeout, gloo_device](const c10::intrusive_ptr<c10d::Store>& store, int r,
                                                   int n) {
        auto options = c10d::ProcessGroupGloo::Options::create(timeout);
        options->devices.push_back(gloo_device);
        return c10::intrusive_ptr<compat::C10dBackend>(
            c10::make_intrusive<c10d::ProcessGroupGloo>(store, r, n, options));
      };
    }
    std::vector<int64_t> global(size);
    for (int r = 0; r < size; ++r) global[r] = r;
    auto backend = world->make_backend(joined.group_store, rank, size);
    return std::make_shared<C10dGroup>(world, backend, joined.prefix, rank, std::move(joined.peers),
                                       std::move(global));
  } catch (const volt::Error&) {
    throw;
  } catch (const std::exception& error) {
    VOLT_FAIL("rank ", rank, " of ", size, " could not connect its ", device == c10::kCUDA ? "NCCL" : "Gloo",
              " process group (rendezvous at ", where, ", timeout ", seconds(timeout),
              "): ", message_of(error), ". A rank may have died after joining; see its output");
  }
}

}  // namespace volt
