// `volt inspect FILE` and `volt convert IN OUT`: checkpoints of any format volt reads, streamed tensor by
// tensor so that memory stays near the largest tensor, not the file.
#pragma once

#include <CLI/CLI.hpp>

namespace volt::tools {

void add_checkpoint_commands(CLI::App& app);

}  // namespace volt::tools
