// Starting real processes for the distributed tests: each run in a process group of its own, its output in
// a file, a hard deadline after which the whole group is SIGKILLed, and a check that no process it started
// (by the pids the workers print) is left afterwards.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace volt::testing {

/// VOLT_DIST_WORKER, else volt_dist_worker beside this test executable (both are built into tests/).
inline std::string dist_worker() {
  if (const char* path = std::getenv("VOLT_DIST_WORKER")) return path;
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "volt_dist_worker").string();
}

/// The venv's torchrun, or "" when the venv is absent.
inline std::string venv_torchrun() {
  const char* cache = std::getenv("VOLT_CACHE");
  const char* home = std::getenv("HOME");
  const std::string root = cache ? cache : std::string(home ? home : ".") + "/.cache/volt";
  const std::string torchrun = root + "/venv/bin/torchrun";
  return access(torchrun.c_str(), X_OK) == 0 ? torchrun : "";
}

struct Command {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;  // set on top of this process's environment, rank variables removed
};

struct ProcessResult {
  int status = -1;  // as waitpid reports it
  std::string output;
  bool exited_zero() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
  std::string describe() const {
    std::ostringstream out;
    if (WIFEXITED(status))
      out << "exit " << WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
      out << "signal " << WTERMSIG(status);
    else
      out << "status " << status;
    return out.str();
  }
};

struct RunResult {
  std::vector<ProcessResult> processes;
  double seconds = 0;
  bool timed_out = false;
  std::vector<pid_t> left_behind;      // worker pids still alive after the run
  std::map<int64_t, pid_t> rank_pids;  // from the workers' "rank R pid P" lines
  // CLOCK_MONOTONIC milliseconds (the workers print the same clock): when each rank began to join its
  // group, died on purpose, or reported a volt::Error; and when the run ended.
  std::map<int64_t, long long> joining_ms, dying_ms, error_ms;
  long long end_ms = 0;
  std::string output() const {
    std::string all;
    for (size_t i = 0; i < processes.size(); ++i)
      all +=
          "--- process " + std::to_string(i) + " (" + processes[i].describe() + ")\n" + processes[i].output;
    return all;
  }
};

inline bool process_alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const auto state = line.rfind(')');
  return state == std::string::npos || state + 2 >= line.size() || line[state + 2] != 'Z';
}

/// Runs the commands at once, each in the same new process group, and waits for all of them, at most
/// `timeout`; then SIGKILLs the group. Worker pids still alive `grace` after the run are reported (and
/// killed).
inline RunResult run_processes(const std::vector<Command>& commands, std::chrono::milliseconds timeout,
                               std::chrono::milliseconds grace = std::chrono::milliseconds(3000)) {
  static const char* const kCleared[] = {"RANK",
                                         "LOCAL_RANK",
                                         "WORLD_SIZE",
                                         "LOCAL_WORLD_SIZE",
                                         "GROUP_RANK",
                                         "NODE_RANK",
                                         "MASTER_ADDR",
                                         "MASTER_PORT",
                                         "TORCHELASTIC_USE_AGENT_STORE",
                                         "TORCHELASTIC_RESTART_COUNT",
                                         "GLOO_SOCKET_IFNAME"};
  RunResult result;
  const auto start = std::chrono::steady_clock::now();
  std::vector<pid_t> pids;
  std::vector<std::string> files;
  pid_t group = 0;
  for (const auto& command : commands) {
    char path[] = "/tmp/volt_dist_test_XXXXXX";
    const int fd = mkstemp(path);
    files.push_back(path);
    std::vector<std::string> entries;
    for (char** entry = environ; *entry != nullptr; ++entry) {
      const std::string text(*entry);
      const std::string name = text.substr(0, text.find('='));
      bool cleared = name.rfind("SLURM_", 0) == 0 || command.env.count(name) > 0;
      for (const char* variable : kCleared) cleared = cleared || name == variable;
      if (!cleared) entries.push_back(text);
    }
    for (const auto& [name, value] : command.env) entries.push_back(name + "=" + value);
    if (command.env.count("OMP_NUM_THREADS") == 0) entries.push_back("OMP_NUM_THREADS=1");
    std::vector<char*> envp;
    for (auto& entry : entries) envp.push_back(entry.data());
    envp.push_back(nullptr);
    std::vector<char*> argv;
    for (const auto& argument : command.argv) argv.push_back(const_cast<char*>(argument.c_str()));
    argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
      setpgid(0, group);
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    close(fd);
    setpgid(pid, group);
    if (group == 0) group = pid;
    pids.push_back(pid);
  }
  result.processes.resize(commands.size());
  std::vector<bool> done(commands.size(), false);
  const auto deadline = start + timeout;
  while (true) {
    bool running = false;
    for (size_t i = 0; i < pids.size(); ++i) {
      if (done[i]) continue;
      if (waitpid(pids[i], &result.processes[i].status, WNOHANG) == pids[i])
        done[i] = true;
      else
        running = true;
    }
    if (!running) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      result.timed_out = true;
      kill(-group, SIGKILL);
      for (size_t i = 0; i < pids.size(); ++i)
        if (!done[i]) waitpid(pids[i], &result.processes[i].status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.end_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count();
  for (size_t i = 0; i < files.size(); ++i) {
    std::ifstream file(files[i]);
    std::stringstream text;
    text << file.rdbuf();
    result.processes[i].output = text.str();
    std::remove(files[i].c_str());
  }
  static const std::regex rank_line(
      R"(volt_dist_worker: rank (\d+):? (pid|joining at|dying at|volt::Error at) (\d+))");
  for (const auto& process : result.processes)
    for (std::sregex_iterator match(process.output.begin(), process.output.end(), rank_line), end;
         match != end; ++match) {
      const int64_t rank = std::stoll((*match)[1]);
      const std::string what = (*match)[2];
      const long long value = std::stoll((*match)[3]);
      if (what == "pid") result.rank_pids[rank] = static_cast<pid_t>(value);
      if (what == "joining at") result.joining_ms[rank] = value;
      if (what == "dying at") result.dying_ms[rank] = value;
      if (what == "volt::Error at") result.error_ms[rank] = value;
    }
  const auto grace_end = std::chrono::steady_clock::now() + grace;
  while (true) {
    result.left_behind.clear();
    for (const auto& [rank, pid] : result.rank_pids)
      if (process_alive(pid)) result.left_behind.push_back(pid);
    if (result.left_behind.empty() || std::chrono::steady_clock::now() >= grace_end) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (pid_t pid : result.left_behind) kill(pid, SIGKILL);  // a failing test still cleans up
  kill(-group, SIGKILL);
  return result;
}

inline Command worker(std::vector<std::string> arguments, std::map<std::string, std::string> env = {}) {
  arguments.insert(arguments.begin(), dist_worker());
  return {arguments, env};
}

inline int count(const std::string& text, const std::string& part) {
  int found = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++found;
  return found;
}

}  // namespace volt::testing
