#include "volt/optim/optimizer_state.h"

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>
#include <torch/torch.h>

#include <unordered_map>
#include <utility>

#include "volt/error.h"
#include "volt/torch_compat.h"

namespace volt {
namespace {

enum class Kind { kAdam, kAdamW, kSGD };

Kind kind_of(const torch::optim::Optimizer& optimizer) {
  if (dynamic_cast<const torch::optim::AdamW*>(&optimizer)) return Kind::kAdamW;
  if (dynamic_cast<const torch::optim::Adam*>(&optimizer)) return Kind::kAdam;
  if (dynamic_cast<const torch::optim::SGD*>(&optimizer)) return Kind::kSGD;
  VOLT_FAIL("volt checkpoints the state of Adam, AdamW and SGD optimizers; this one (",
            typeid(optimizer).name(), ") is not one of them: use one of those or save its state yourself");
}

// PyTorch keeps `step` as a float32 scalar tensor since 1.12.
Value step_value(int64_t step) { return Value(torch::tensor(static_cast<float>(step))); }
int64_t read_step(const Value& v) {
  if (v.is_tensor()) return static_cast<int64_t>(v.to_tensor().item<double>());
  return static_cast<int64_t>(v.to_double());
}
Value tensor_or_none(const torch::Tensor& t) { return t.defined() ? Value(t.detach().clone()) : Value(); }
torch::Tensor like(const Value& v, const torch::Tensor& param) {
  if (v.is_none()) return {};
  return v.to_tensor().to(param.device(), param.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
}

template <typename Options>
void save_adam_group(Dict& g, const Options& o) {
  g.set("lr", o.lr());
  g.set("betas", Value::tuple({std::get<0>(o.betas()), std::get<1>(o.betas())}));
  g.set("eps", o.eps());
  g.set("weight_decay", o.weight_decay());
  g.set("amsgrad", o.amsgrad());
  g.set("maximize", false);
  g.set("foreach", Value());
  g.set("capturable", false);
  g.set("differentiable", false);
  g.set("fused", Value());
}

template <typename Options>
void load_adam_group(const Value& g, Options& o) {
  o.lr(g["lr"].to_double());
  const auto& betas = g["betas"].items();
  o.betas(std::make_tuple(betas.at(0).to_double(), betas.at(1).to_double()));
  o.eps(g["eps"].to_double());
  o.weight_decay(g["weight_decay"].to_double());
  o.amsgrad(g["amsgrad"].to_bool());
}

template <typename State>
Value save_adam_state(const State& s) {
  Value out = Value::dict();
  out.to_dict().set("step", step_value(s.step()));
  out.to_dict().set("exp_avg", tensor_or_none(s.exp_avg()));
  out.to_dict().set("exp_avg_sq", tensor_or_none(s.exp_avg_sq()));
  if (s.max_exp_avg_sq().defined()) out.to_dict().set("max_exp_avg_sq", tensor_or_none(s.max_exp_avg_sq()));
  return out;
}

template <typename State>
std::unique_ptr<torch::optim::OptimizerParamState> load_adam_state(const Value& v, const torch::Tensor& p) {
  auto s = std::make_unique<State>();
  s->step(read_step(v["step"]));
  s->exp_avg(like(v["exp_avg"], p));
  s->exp_avg_sq(like(v["exp_avg_sq"], p));
  if (const Value* m = v.to_dict().find("max_exp_avg_sq")) s->max_exp_avg_sq(like(*m, p));
  return s;
}

}  // namespace

void check_distinct_parameters(const torch::optim::Optimizer& optimizer) {
  std::unordered_map<const c10::TensorImpl*, std::pair<size_t, size_t>> first;  // -> (group, index)
  const auto& groups = optimizer.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& params = groups[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      const auto [it, inserted] = first.emplace(params[i].unsafeGetTensorImpl(), std::make_pair(g, i));
      VOLT_CHECK(inserted, "the optimizer holds one tensor twice (param group ", it->second.first, " #",
                 it->second.second, " and param group ", g, " #", i,
                 "): it would step it twice per step. A tied weight is listed once per name by "
                 "module.parameters(): build the optimizer from volt::unique_parameters(module) "
                 "(volt/core/parameters.h), as PyTorch's module.parameters() gives");
    }
  }
}

Value optimizer_state_dict(const torch::optim::Optimizer& optimizer) {
  const Kind kind = kind_of(optimizer);
  check_distinct_parameters(optimizer);
  Value state = Value::dict();
  Value groups = Value::list();
  int64_t index = 0;
  for (const auto& group : optimizer.param_groups()) {
    Value g = Value::dict();
    Dict& gd = g.to_dict();
    switch (kind) {
      case Kind::kAdam:
        save_adam_group(gd, static_cast<const torch::optim::AdamOptions&>(group.options()));
        break;
      case Kind::kAdamW:
        save_adam_group(gd, static_cast<const torch::optim::AdamWOptions&>(group.options()));
        break;
      case Kind::kSGD: {
        const auto& o = static_cast<const torch::optim::SGDOptions&>(group.options());
        gd.set("lr", o.lr());
        gd.set("momentum", o.momentum());
        gd.set("dampening", o.dampening());
        gd.set("weight_decay", o.weight_decay());
        gd.set("nesterov", o.nesterov());
        gd.set("maximize", false);
        gd.set("foreach", Value());
        gd.set("differentiable", false);
        gd.set("fused", Value());
        break;
      }
    }
    Value params = Value::list();
    for (const auto& p : group.params()) {
      auto it = optimizer.state().find(compat::optimizer_state_key(p));
      if (it != optimizer.state().end()) {
        Value s;
        switch (kind) {
          case Kind::kAdam:
            s = save_adam_state(static_cast<const torch::optim::AdamParamState&>(*it->second));
            break;
          case Kind::kAdamW:
            s = save_adam_state(static_cast<const torch::optim::AdamWParamState&>(*it->second));
            break;
          case Kind::kSGD:
            s = Value::dict();
            s.to_dict().set(
                "momentum_buffer",
                tensor_or_none(
                    static_cast<const torch::optim::SGDParamState&>(*it->second).momentum_buffer()));
            break;
        }
        state.to_dict().set(index, s);
      }
      params.items().push_back(index++);
    }
    gd.set("params", params);
    groups.items().push_back(g);
  }
  Value out = Value::dict();
  out.to_dict().set("state", state);
  out.to_dict().set("param_groups", groups);
  return out;
}

void load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const Value& value) {
  const Kind kind = kind_of(optimizer);
  check_distinct_parameters(optimizer);
  VOLT_CHECK(value.is_dict() && value.to_dict().contains("state") && value.to_dict().contains("param_groups"),
             "an optimizer state is a dict with 'state' and 'param_groups', not ", value.repr(2));
  const auto& groups = value["param_groups"].items();
  auto& own_groups = optimizer.param_groups();
  VOLT_CHECK(groups.size() == own_groups.size(), "the checkpoint's optimizer has ", groups.size(),
             " param groups, this one ", own_groups.size(),
             ": configure_optimizers must build the same groups");
  const Dict& states = value["state"].to_dict();
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const Value& g = groups[gi];
    auto& own = own_groups[gi];
    const auto& indices = g["params"].items();
    VOLT_CHECK(indices.size() == own.params().size(), "param group ", gi, " holds ", indices.size(),
               " parameters in the checkpoint and ", own.params().size(), " here: the model differs");
    switch (kind) {
      case Kind::kAdam:
        load_adam_group(g, static_cast<torch::optim::AdamOptions&>(own.options()));
        break;
      case Kind::kAdamW:
        load_adam_group(g, static_cast<torch::optim::AdamWOptions&>(own.options()));
        break;
      case Kind::kSGD: {
        auto& o = static_cast<torch::optim::SGDOptions&>(own.options());
        o.lr(g["lr"].to_double());
        o.momentum(g["momentum"].to_double());
        o.dampening(g["dampening"].to_double());
        o.weight_decay(g["weight_decay"].to_double());
        o.nesterov(g["nesterov"].to_bool());
        break;
      }
    }
    for (size_t i = 0; i < indices.size(); ++i) {
      const auto& p = own.params()[i];
      const auto key = compat::optimizer_state_key(p);
      const Value* s = states.find(indices[i]);
      if (s == nullptr) {
        optimizer.state().erase(key);
        continue;
      }
      std::unique_ptr<torch::optim::OptimizerParamState> loaded;
      switch (kind) {
        case Kind::kAdam:
          loaded = load_adam_state<torch::optim::AdamParamState>(*s, p);
          break;
        case Kind::kAdamW:
          loaded = load_adam_state<torch::optim::AdamWParamState>(*s, p);
          break;
        case Kind::kSGD: {
          auto sgd = std::make_unique<torch::optim::SGDParamState>();
          sgd->momentum_buffer(like((*s)["momentum_buffer"], p));
          loaded = std::move(sgd);
          break;
        }
      }
      optimizer.state()[key] = std::move(loaded);
    }
  }
}

}  // namespace volt
