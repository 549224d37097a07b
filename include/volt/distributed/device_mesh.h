// A device mesh (PyTorch's init_device_mesh): the ranks of a group laid out row-major in an n-d grid, with
// one subgroup per dimension through this rank — for hybrid sharding a 2-D mesh (replicate x shard) whose
// "shard" group shards parameters within a node and whose "replicate" group all-reduces across nodes;
// tensor and pipeline parallelism add dimensions. Built on ProcessGroup::new_group, so it has the same
// bounded waits and dead-rank errors.
//
//   volt::DeviceMesh mesh(group, {2, 4}, {"replicate", "shard"});  // 8 ranks: rank 5 is at (1, 1)
//   mesh.group("shard")->all_gather(rows);                           // ranks 4..7
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "volt/distributed/process_group.h"

namespace volt {

class DeviceMesh {
 public:
  /// Collective over `world`: every rank builds the same mesh. The product of `shape` must be
  /// world->size(); `dim_names` (one per dimension, distinct) name the dimensions for group(name).
  DeviceMesh(std::shared_ptr<ProcessGroup> world, std::vector<int64_t> shape,
             std::vector<std::string> dim_names = {});

  int64_t ndim() const { return static_cast<int64_t>(shape_.size()); }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t size(int64_t dim) const;
  /// This rank's coordinate in the mesh.
  const std::vector<int64_t>& coordinate() const { return coordinate_; }
  /// The group of the ranks that share this rank's coordinates in every dimension but `dim`, ordered
  /// along `dim` (its rank in that group is coordinate()[dim]).
  const std::shared_ptr<ProcessGroup>& group(int64_t dim) const;
  const std::shared_ptr<ProcessGroup>& group(const std::string& dim_name) const;
  /// The ranks of `world` (in its numbering) of the group along `dim` through this rank.
  std::vector<int64_t> ranks_along(int64_t dim) const;
  const std::shared_ptr<ProcessGroup>& world() const { return world_; }

 private:
  int64_t dim_of(const std::string& name) const;

  std::shared_ptr<ProcessGroup> world_;
  std::vector<int64_t> shape_;
  std::vector<std::string> names_;
  std::vector<int64_t> coordinate_;
  std::vector<std::shared_ptr<ProcessGroup>> groups_;  // per dimension
};

}  // namespace volt
