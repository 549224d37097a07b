#include "volt/distributed/launcher.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "volt/error.h"

extern char** environ;

namespace volt {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kPollInterval = std::chrono::milliseconds(20);
// How long stopped ranks get between SIGTERM and SIGKILL (they may be writing a log line).
constexpr auto kTerminateGrace = std::chrono::seconds(3);

struct Child {
  int64_t global_rank = 0;
  pid_t pid = -1;
  bool reaped = false;
  int status = 0;
};

struct LauncherState {
  std::mutex mutex;
  std::condition_variable changed;
  bool launched = false;
  ClusterEnvironment result;
  std::vector<Child> children;
  bool forked = false;     // the watcher has started every child (or failed to)
  std::string fork_error;  // why it could not
  bool stopping = false;   // wait_for_children is stopping them: exits are expected
  std::chrono::milliseconds exit_timeout{std::chrono::seconds(60)};
};

// Never destroyed: the watcher thread and the atexit handler use it until the process ends.
LauncherState& state() {
  static auto* launcher = new LauncherState;
  return *launcher;
}

bool succeeded(const Child& child) {
  return child.reaped && WIFEXITED(child.status) && WEXITSTATUS(child.status) == 0;
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    const int signal = WTERMSIG(status);
    return detail::concat("was killed by signal ", signal, " (", strsignal(signal), ")");
  }
  return detail::concat("exited with status ", WEXITSTATUS(status));
}

std::vector<std::string> own_arguments() {
  std::ifstream file("/proc/self/cmdline", std::ios::binary);
  const std::string cmdline((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  VOLT_CHECK(!cmdline.empty(),
             "cannot read /proc/self/cmdline to re-run this program for the other ranks: "
             "start the ranks yourself (torchrun --no-python --nproc-per-node N ./program)");
  std::vector<std::string> arguments;
  std::string::size_type begin = 0;
  while (begin < cmdline.size()) {
    const auto end = cmdline.find('\0', begin);
    arguments.push_back(cmdline.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  return arguments;
}

std::map<std::string, std::string> rank_variables(const ClusterEnvironment& env, int64_t local_rank) {
  return {{"MASTER_ADDR", env.master_addr},
          {"MASTER_PORT", std::to_string(env.master_port)},
          {"RANK", std::to_string(env.node_rank * env.local_world_size + local_rank)},
          {"LOCAL_RANK", std::to_string(local_rank)},
          {"WORLD_SIZE", std::to_string(env.world_size)},
          {"LOCAL_WORLD_SIZE", std::to_string(env.local_world_size)},
          {"NODE_RANK", std::to_string(env.node_rank)},
          {"GROUP_RANK", std::to_string(env.node_rank)}};
}

// Kills every child still running: SIGTERM, a grace period, SIGKILL, and reaps them all. Bounded: a process
// that survives SIGKILL for seconds is in the kernel's hands and is not waited for further.
void stop_children(std::vector<Child>& children) {
  for (const auto& child : children)
    if (!child.reaped) ::kill(child.pid, SIGTERM);
  auto reap_until = [&](Clock::time_point deadline) {
    while (true) {
      bool running = false;
      for (auto& child : children) {
        if (child.reaped) continue;
        if (::waitpid(child.pid, &child.status, WNOHANG) == child.pid)
          child.reaped = true;
        else
          running = true;
      }
      if (!running || Clock::now() >= deadline) return;
      std::this_thread::sleep_for(kPollInterval);
    }
  };
  reap_until(Clock::now() + kTerminateGrace);
  for (const auto& child : children)
    if (!child.reaped) ::kill(child.pid, SIGKILL);
  reap_until(Clock::now() + std::chrono::seconds(5));
}

// Runs in the watcher thread: forking from this long-lived thread matters, because PR_SET_PDEATHSIG fires
// when the *thread* that forked ends, not the process.
void start_children(LauncherState& launcher, const std::vector<std::string>& arguments,
                    const ClusterEnvironment& env) {
  std::vector<char*> argv;
  for (const auto& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  for (int64_t local_rank = 1; local_rank < env.local_world_size; ++local_rank) {
    // Everything the child needs is built before fork: after it, only async-signal-safe calls.
    const auto variables = rank_variables(env, local_rank);
    std::vector<std::string> entries;
    for (char** entry = environ; *entry != nullptr; ++entry) {
      const std::string text(*entry);
      if (variables.count(text.substr(0, text.find('='))) == 0) entries.push_back(text);
    }
    for (const auto& [name, value] : variables) entries.push_back(name + "=" + value);
    std::vector<char*> envp;
    for (auto& entry : entries) envp.push_back(entry.data());
    envp.push_back(nullptr);

    const pid_t pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);  // the parent died before prctl: do not run as an orphan
      sigset_t none;
      sigemptyset(&none);
      ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
      ::execve("/proc/self/exe", argv.data(), envp.data());
      const char message[] = "volt: cannot re-run /proc/self/exe for another rank (execve failed)\n";
      [[maybe_unused]] auto written = ::write(STDERR_FILENO, message, sizeof message - 1);
      ::_exit(127);
    }
    std::lock_guard<std::mutex> lock(launcher.mutex);
    if (pid < 0) {
      launcher.fork_error =
          detail::concat("fork failed for local rank ", local_rank, ": ", std::strerror(errno));
      break;
    }
    launcher.children.push_back({env.node_rank * env.local_world_size + local_rank, pid});
  }
  std::lock_guard<std::mutex> lock(launcher.mutex);
  launcher.forked = true;
  launcher.changed.notify_all();
}

[[noreturn]] void fail_run(LauncherState& launcher, const Child& failed) {
  std::fprintf(stderr, "volt: rank %lld (pid %d) %s; stopping the other ranks\n",
               static_cast<long long>(failed.global_rank), static_cast<int>(failed.pid),
               describe_exit(failed.status).c_str());
  std::fflush(stderr);
  stop_children(launcher.children);
  std::fflush(nullptr);
  ::_exit(1);  // as Lightning: one failed rank fails the job, whatever this rank was doing
}

void watch(LauncherState& launcher, std::vector<std::string> arguments, ClusterEnvironment env) {
  start_children(launcher, arguments, env);
  std::unique_lock<std::mutex> lock(launcher.mutex);
  while (true) {
    bool running = false;
    for (auto& child : launcher.children) {
      if (child.reaped) continue;
      if (::waitpid(child.pid, &child.status, WNOHANG) != child.pid) {
        running = true;
        continue;
      }
      child.reaped = true;
      launcher.changed.notify_all();
      if (!succeeded(child) && !launcher.stopping)
        fail_run(launcher, child);  // holds the lock: no one else reaps
    }
    if (!running) return;
    launcher.changed.wait_for(lock, kPollInterval);
  }
}

void wait_at_exit() {
  auto& launcher = state();
  if (!SubprocessLauncher::wait_for_children(launcher.exit_timeout)) {
    std::fflush(nullptr);
    ::_exit(1);
  }
}

}  // namespace

ClusterEnvironment SubprocessLauncher::launch(const ClusterEnvironment& env) {
  auto& launcher = state();
  std::unique_lock<std::mutex> lock(launcher.mutex);
  if (launcher.launched) return launcher.result;
  if (env.launched_externally()) {
    launcher.launched = true;
    launcher.result = env;
    return env;
  }
  VOLT_CHECK(env.local_world_size >= 1 && env.world_size >= env.local_world_size,
             "cannot launch local_world_size=", env.local_world_size, " of world_size=", env.world_size,
             ": pass the environment ClusterEnvironment::detect returned");
  ClusterEnvironment self = env;
  self.source = ClusterSource::kTorchrun;
  self.local_rank = 0;
  self.global_rank = env.node_rank * env.local_world_size;
  if (env.local_world_size > 1) {
    auto arguments = own_arguments();
    std::thread(watch, std::ref(launcher), std::move(arguments), env).detach();
    launcher.changed.wait(lock, [&] { return launcher.forked; });
    if (!launcher.fork_error.empty()) {
      launcher.stopping = true;
      stop_children(launcher.children);
      VOLT_FAIL("cannot start the other local ranks (", launcher.fork_error,
                "): free some memory or processes, or start the ranks with torchrun");
    }
    std::atexit(wait_at_exit);
  }
  for (const auto& [name, value] : rank_variables(self, 0)) ::setenv(name.c_str(), value.c_str(), 1);
  launcher.launched = true;
  launcher.result = self;
  return self;
}

bool SubprocessLauncher::wait_for_children(std::chrono::milliseconds timeout) {
  auto& launcher = state();
  std::unique_lock<std::mutex> lock(launcher.mutex);
  auto all_reaped = [&] {
    for (const auto& child : launcher.children)
      if (!child.reaped) return false;
    return true;
  };
  // The watcher reaps; a failure it sees ends the process from there.
  if (!launcher.changed.wait_for(lock, timeout, all_reaped)) {
    launcher.stopping = true;
    for (const auto& child : launcher.children)
      if (!child.reaped)
        std::fprintf(stderr,
                     "volt: rank %lld (pid %d) was still running %.1f s after rank %lld finished; "
                     "stopping it\n",
                     static_cast<long long>(child.global_rank), static_cast<int>(child.pid),
                     timeout.count() / 1000.0, static_cast<long long>(launcher.result.global_rank));
    std::fflush(stderr);
    stop_children(launcher.children);
    return false;
  }
  for (const auto& child : launcher.children)
    if (!succeeded(child)) return false;
  return true;
}

int SubprocessLauncher::children() {
  auto& launcher = state();
  std::lock_guard<std::mutex> lock(launcher.mutex);
  return static_cast<int>(launcher.children.size());
}

void SubprocessLauncher::set_exit_timeout(std::chrono::milliseconds timeout) {
  auto& launcher = state();
  std::lock_guard<std::mutex> lock(launcher.mutex);
  launcher.exit_timeout = timeout;
}

}  // namespace volt
