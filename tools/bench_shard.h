// `volt bench shard`: building and training a GPT-2 with every rank holding the whole model (DDP) against
// each rank holding only its shard (FSDP, layers made in configure_model()), one JSON line per mode.
#pragma once

#include <CLI/CLI.hpp>

namespace volt::tools {
void add_bench_shard_commands(CLI::App& bench);
}
