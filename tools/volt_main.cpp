// The `volt` command: checkpoint tools (inspect, convert) and benchmarks.
#include "bench_init.h"
#include "bench_load.h"
#include "bench_shard.h"
#include "bench_train.h"
#include "checkpoint_commands.h"
#include "demo.h"
#include "volt/torch_compat.h"
#include "volt/volt.h"

#include <CLI/CLI.hpp>

#include <iostream>

int main(int argc, char** argv) {
  CLI::App app{"volt: Lightning-style training and efficient model initialization for LibTorch"};
  app.require_subcommand(1);
  app.add_subcommand("version", "print volt's and LibTorch's versions")->callback([] {
    std::cout << "volt " << VOLT_VERSION << " (LibTorch " << volt::compat::torch_version()
              << ", CUDA kernels " << (VOLT_WITH_CUDA ? "on" : "off") << ", init key "
              << VOLT_INIT_DISPATCH_KEY_NAME << ")\n";
  });
  volt::tools::add_checkpoint_commands(app);
  volt::tools::add_demo_commands(app);
  auto* bench = app.add_subcommand("bench", "benchmarks that print one JSON line per mode");
  bench->require_subcommand(1);
  volt::tools::add_bench_init_commands(*bench);
  volt::tools::add_bench_load_commands(*bench);
  volt::tools::add_bench_train_commands(*bench);
  volt::tools::add_bench_shard_commands(*bench);
  try {
    CLI11_PARSE(app, argc, argv);
  } catch (const volt::Error& e) {
    std::cerr << "volt: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "volt: " << e.what_without_backtrace() << "\n";
    return 1;
  }
  return 0;
}
