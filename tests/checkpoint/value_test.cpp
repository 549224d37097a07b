// volt::Value's accessors on temporaries: they return by value, so that nothing refers into a Value (or a
// reader) that is gone — `for (auto& kv : volt::state_dict(m).to_dict())` iterates a live dict.
#include "volt/checkpoint/value.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <type_traits>

#include "volt/checkpoint/hparams.h"
#include "volt/checkpoint/safetensors.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/checkpoint/torch_file.h"

using volt::Dict;
using volt::Value;

namespace {

// Whether `find` can be called on a temporary Dict (it must not: the pointer would dangle).
template <typename T, typename = void>
struct can_find_on : std::false_type {};
template <typename T>
struct can_find_on<T, std::void_t<decltype(std::declval<T>().find(std::declval<const Value&>()))>>
    : std::true_type {};

}  // namespace

// Accessors on an lvalue return references (no copy); on a temporary, values that own what they hold.
static_assert(std::is_same_v<decltype(std::declval<Value&>().to_dict()), Dict&>);
static_assert(std::is_same_v<decltype(std::declval<const Value&>().to_dict()), const Dict&>);
static_assert(std::is_same_v<decltype(std::declval<Value>().to_dict()), const Dict>);
static_assert(std::is_same_v<decltype(std::declval<Value>().items()), const std::vector<Value>>);
static_assert(std::is_same_v<decltype(std::declval<Value>().to_object()), const volt::Object>);
static_assert(std::is_same_v<decltype(std::declval<Value>().to_tensor()), at::Tensor>);
static_assert(std::is_same_v<decltype(std::declval<Value>().to_string()), std::string>);
static_assert(std::is_same_v<decltype(std::declval<Value>()["k"]), Value>);
static_assert(std::is_same_v<decltype(std::declval<const Value&>()["k"]), const Value&>);
static_assert(std::is_same_v<decltype(std::declval<Dict>().items()), std::vector<Dict::Item>>);
static_assert(can_find_on<Dict&>::value && can_find_on<const Dict&>::value);
static_assert(!can_find_on<Dict>::value && !can_find_on<const Dict>::value);
static_assert(std::is_same_v<decltype(std::declval<volt::TorchFileReader>().contents()), Value>);
static_assert(std::is_same_v<decltype(std::declval<volt::SafetensorsReader>().tensors()),
                             std::vector<volt::TensorInfo>>);
static_assert(std::is_same_v<decltype(std::declval<volt::HParams>().value()), Value>);

TEST(Value, IteratingATemporarysDictSeesLiveItems) {
  torch::nn::Linear linear(3, 2);
  std::vector<std::string> names;
  std::vector<int64_t> sizes;
  for (auto& kv : volt::state_dict(*linear).to_dict()) {
    names.push_back(kv.first.to_string());
    sizes.push_back(kv.second.to_tensor().numel());
  }
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(sizes, (std::vector<int64_t>{6, 2}));
  const at::Tensor& weight = volt::state_dict(*linear)["weight"].to_tensor();  // a value, lifetime-extended
  EXPECT_EQ(weight.data_ptr(), linear->weight.data_ptr());
}

TEST(Value, ATemporaryThatSharesItsDictCopiesItAndLeavesTheOwnerIntact) {
  Value owner = Value::dict();
  owner.to_dict().set("a", 1);
  owner.to_dict().set("b", Value::list({2, 3}));
  const Dict copy = Value(owner).to_dict();  // a temporary sharing owner's dict
  EXPECT_EQ(copy.size(), 2u);
  EXPECT_EQ(owner.to_dict().size(), 2u);  // not moved out from under the owner
  EXPECT_EQ(owner["b"].items().size(), 2u);
  const std::vector<Value> items = Value(owner)["b"].items();
  EXPECT_EQ(items.at(1).to_int(), 3);
  EXPECT_EQ(owner["b"].items().size(), 2u);
}
