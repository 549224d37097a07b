// What every volt logger keeps in its run folder, as Lightning's loggers do: the folder
// <save_dir>/<name>/version_<N> (N the next free one unless given), chosen and created on first use, and
// hparams.yaml with the hyper-parameters logged so far.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace volt::detail {

/// Lightning's `_get_next_version`: one past the largest N of the `version_N` folders in `root`, 0 when
/// there are none (or no `root`).
int64_t next_version(const std::string& root);

/// A value or key as a YAML plain scalar when it reads back as the same text, else quoted.
std::string yaml_scalar(const std::string& text);

class LoggerFiles {
 public:
  /// `version` -1: the next free one, resolved on first use (as Lightning, so that loggers made before a
  /// run do not claim a folder).
  LoggerFiles(std::string save_dir, std::string name, int64_t version);

  /// The run folder, created on the first call; throws volt::Error naming it when it cannot be.
  const std::string& log_dir() const;
  int64_t version() const;

  /// Later values replace earlier ones under the same key (Lightning's `hparams.update`).
  void update_hparams(const std::vector<std::pair<std::string, std::string>>& hparams);
  /// Writes hparams.yaml (keys sorted, as PyYAML's `sort_keys=True`) when it changed or was never written.
  void save_hparams();

 private:
  void resolve() const;

  std::string save_dir_;
  std::string name_;
  mutable int64_t version_;
  mutable std::string log_dir_;  // empty until resolved
  std::map<std::string, std::string> hparams_;
  bool hparams_saved_ = false;
};

}  // namespace volt::detail
