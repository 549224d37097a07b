// Pieces of ClusterEnvironment::detect that tests call directly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace volt::detail {

/// The variable's value; unset and empty are the same (torchrun and SLURM never set an empty one).
std::optional<std::string> env_value(const char* name);
/// A non-negative integer, or volt::Error naming the variable and what it should hold.
int64_t env_integer(const char* name, const std::string& value, const char* what);
/// The first host of a SLURM node list: "node[03-05,07],gpu1" gives "node03", "a b" gives "a".
std::string first_slurm_host(const std::string& nodelist);
/// A TCP port that was free on 127.0.0.1 a moment ago (bind to port 0), as Lightning picks one.
int free_loopback_port();

}  // namespace volt::detail
