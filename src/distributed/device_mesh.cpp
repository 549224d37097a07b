#include "volt/distributed/device_mesh.h"

#include <c10/util/ArrayRef.h>

#include <algorithm>

#include "volt/error.h"

namespace volt {
namespace {

// The rank at `coordinate` in a row-major grid of `shape`.
int64_t rank_at(const std::vector<int64_t>& shape, const std::vector<int64_t>& coordinate) {
  int64_t rank = 0;
  for (size_t d = 0; d < shape.size(); ++d) rank = rank * shape[d] + coordinate[d];
  return rank;
}

}  // namespace

DeviceMesh::DeviceMesh(std::shared_ptr<ProcessGroup> world, std::vector<int64_t> shape,
                       std::vector<std::string> dim_names)
    : world_(std::move(world)), shape_(std::move(shape)), names_(std::move(dim_names)) {
  VOLT_CHECK(world_ != nullptr, "DeviceMesh needs a process group: pass the world group");
  int64_t product = 1;
  for (int64_t s : shape_) {
    VOLT_CHECK(s >= 1, "DeviceMesh shape ", c10::IntArrayRef(shape_), " has a dimension below 1");
    product *= s;
  }
  VOLT_CHECK(!shape_.empty() && product == world_->size(), "DeviceMesh shape ", c10::IntArrayRef(shape_),
             " holds ", product, " ranks, but the group has ", world_->size(), ": make the product of the ",
             "shape the world size");
  VOLT_CHECK(names_.empty() || names_.size() == shape_.size(), "DeviceMesh: ", names_.size(),
             " dimension names for ", shape_.size(), " dimensions");
  for (size_t i = 0; i < names_.size(); ++i)
    VOLT_CHECK(std::count(names_.begin(), names_.end(), names_[i]) == 1, "DeviceMesh: dimension name '",
               names_[i], "' is given twice");
  coordinate_.assign(shape_.size(), 0);
  for (int64_t d = ndim() - 1, rest = world_->rank(); d >= 0; --d) {
    coordinate_[d] = rest % shape_[d];
    rest /= shape_[d];
  }
  // Every line of every dimension, in the same order on every rank (new_group is collective).
  groups_.resize(shape_.size());
  for (int64_t d = 0; d < ndim(); ++d) {
    std::vector<int64_t> others;  // the dimensions that stay fixed along a line of d
    for (int64_t e = 0; e < ndim(); ++e)
      if (e != d) others.push_back(e);
    const int64_t lines = world_->size() / shape_[d];
    for (int64_t line = 0; line < lines; ++line) {
      std::vector<int64_t> at(shape_.size(), 0);
      for (int64_t k = static_cast<int64_t>(others.size()) - 1, rest = line; k >= 0; --k) {
        at[others[k]] = rest % shape_[others[k]];
        rest /= shape_[others[k]];
      }
      std::vector<int64_t> ranks;
      for (int64_t i = 0; i < shape_[d]; ++i) {
        at[d] = i;
        ranks.push_back(rank_at(shape_, at));
      }
      auto group = world_->new_group(ranks);
      if (group) groups_[d] = std::move(group);
    }
    VOLT_CHECK(groups_[d] != nullptr, "internal: rank ", world_->rank(), " is on no line of mesh dimension ",
               d);
  }
}

int64_t DeviceMesh::size(int64_t dim) const {
  VOLT_CHECK(dim >= 0 && dim < ndim(), "mesh dimension ", dim, " of a ", ndim(), "-d mesh");
  return shape_[dim];
}

int64_t DeviceMesh::dim_of(const std::string& name) const {
  auto it = std::find(names_.begin(), names_.end(), name);
  VOLT_CHECK(it != names_.end(), "the mesh has no dimension named '", name, "'",
             names_.empty() ? ": name its dimensions when you build it" : "");
  return it - names_.begin();
}

const std::shared_ptr<ProcessGroup>& DeviceMesh::group(int64_t dim) const {
  size(dim);
  return groups_[dim];
}

const std::shared_ptr<ProcessGroup>& DeviceMesh::group(const std::string& dim_name) const {
  return groups_[dim_of(dim_name)];
}

std::vector<int64_t> DeviceMesh::ranks_along(int64_t dim) const {
  size(dim);
  std::vector<int64_t> at = coordinate_, ranks;
  for (int64_t i = 0; i < shape_[dim]; ++i) {
    at[dim] = i;
    ranks.push_back(rank_at(shape_, at));
  }
  return ranks;
}

}  // namespace volt
