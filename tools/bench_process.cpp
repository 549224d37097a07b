#include "bench_process.h"

#include <cstdio>
#include <cstdlib>

#include "volt/error.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace volt::tools {

ProcessResult run_process(const std::vector<std::string>& argv) {
  VOLT_CHECK(!argv.empty(), "run_process needs a program to run");
  int pipe_fds[2];
  VOLT_CHECK(pipe(pipe_fds) == 0, "pipe failed: ", std::strerror(errno));
  const pid_t pid = fork();
  VOLT_CHECK(pid >= 0, "fork failed: ", std::strerror(errno));
  if (pid == 0) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::fprintf(stderr, "could not start %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(pipe_fds[1]);
  ProcessResult result;
  char buffer[4096];
  for (;;) {
    const ssize_t n = read(pipe_fds[0], buffer, sizeof buffer);
    if (n > 0) {
      result.output.append(buffer, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(pipe_fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string self_executable() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  VOLT_CHECK(n > 0, "cannot find this executable's path: ", std::strerror(errno));
  return std::string(path, static_cast<size_t>(n));
}

std::string peer_script(const std::string& script) {
  // Not a compile definition: an absolute path on the command line defeats the compiler cache of every
  // other clone.
  if (const char* dir = std::getenv("VOLT_PEERS_DIR")) {
    const std::string path = std::string(dir) + "/" + script;
    VOLT_CHECK(access(path.c_str(), R_OK) == 0, "VOLT_PEERS_DIR is ", dir, " but it has no ", script,
               ": point it at volt's tools/peers folder, or unset it");
    return path;
  }
  const std::string exe = self_executable();
  const std::string bin = exe.substr(0, exe.rfind('/'));
  const std::string path = bin + "/../share/volt/peers/" + script;
  VOLT_CHECK(access(path.c_str(), R_OK) == 0, "the peer rows need ", path,
             " (installed with volt and copied into the build tree by CMake): reinstall, or set "
             "VOLT_PEERS_DIR to volt's tools/peers folder");
  return path;
}

int64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

int64_t current_rss_bytes() {
  long pages = 0, resident = 0;
  if (FILE* statm = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(statm, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(statm);
  }
  return static_cast<int64_t>(resident) * sysconf(_SC_PAGESIZE);
}

std::string default_python() {
  if (const char* python = std::getenv("VOLT_PYTHON")) return python;
  const char* cache = std::getenv("VOLT_CACHE");
  const char* home = std::getenv("HOME");
  const std::string root = cache ? cache : std::string(home ? home : ".") + "/.cache/volt";
  return root + "/venv/bin/python";
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace volt::tools
