// A DCP directory behind CheckpointReader, so that Checkpoint::load, load_from_checkpoint and
// load_state_dict read a sharded checkpoint in one process as they read a file.
#pragma once

#include <memory>
#include <string>

#include "volt/checkpoint/checkpoint_file.h"

namespace volt::detail {

/// The whole checkpoint in `dir`, consolidated (see DcpCheckpointReader in dcp_reader.cpp).
std::unique_ptr<CheckpointReader> open_dcp_reader(const std::string& dir);

}  // namespace volt::detail
