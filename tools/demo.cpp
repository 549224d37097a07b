#include "demo.h"

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "bench_process.h"
#include "volt/torch_compat.h"
#include "volt/volt.h"

namespace volt::tools {
namespace {

using nlohmann::json;

struct DemoArgs {
  std::string data = data::FashionMNIST::kDefaultRoot;
  std::string root = "volt_demo";
  std::string accelerator = "auto";
  std::string precision;  // default: the fastest that is native here (volt::fastest_precision)
  int64_t epochs = 4;
  int64_t batch_size = 128;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
};

// One way of rebuilding the model from a checkpoint, measured in its own process (peak RSS is its own).
json rebuild_child(const DemoArgs& args, const std::string& mode, const std::string& ckpt_path) {
  if (args.threads > 0) torch::set_num_threads(args.threads);
  Trainer trainer(TrainerOptions()
                      .accelerator(args.accelerator)
                      .precision(args.precision)
                      .enable_progress_bar(false)
                      .enable_logger(false)
                      .enable_checkpointing(false));
  const int64_t rss_before = current_rss_bytes();
  const double start = now_seconds();
  models::FashionCNN model{nullptr};
  if (mode == "volt") {
    // Construction costs nothing; the checkpoint streams into the parameters.
    auto scope = trainer.init_module(/*empty_init=*/true);
    model = load_from_checkpoint<models::FashionCNN>(ckpt_path);
  } else {
    // What a LibTorch user writes today: float32 on the CPU with LibTorch's init, the whole file read,
    // copied in, then cast and moved.
    model = models::FashionCNN(HParams(Checkpoint::load(ckpt_path).hyper_parameters));
    std::ifstream in(ckpt_path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    const auto ckpt = Checkpoint::load(ckpt_path);
    load_state_dict(*model, ckpt.state_dict, LoadOptions().zero_copy(false));
    model->to(trainer.root_device(), trainer.precision().param_dtype());
  }
  const double built = now_seconds() - start;
  // What building and loading left resident (the model is small: the process's peak is mostly LibTorch
  // and the test images, measured the same way in both modes).
  const int64_t rss_growth = current_rss_bytes() - rss_before;
  auto test = data::FashionMNIST(data::FashionMNIST::kTest, args.data);
  test.normalize();
  auto loader = torch::data::make_data_loader(test, torch::data::samplers::SequentialSampler(10000),
                                              torch::data::DataLoaderOptions(1000));
  const auto metrics = trainer.test(*model, BatchSource(loader, 10));
  return {{"mode", mode},
          {"seconds", built},
          {"peak_rss_bytes", peak_rss_bytes()},
          {"rss_growth_bytes", rss_growth},
          {"model_bytes",
           [&] {
             int64_t bytes = 0;
             for (const auto& t : volt::unique_parameters(*model))
               bytes += t.numel() * static_cast<int64_t>(t.element_size());
             for (const auto& t : volt::unique_buffers(*model))
               bytes += t.numel() * static_cast<int64_t>(t.element_size());
             return bytes;
           }()},
          {"test_acc", metrics.at("test_acc")},
          {"uninitialized", uninitialized(*model).size()}};
}

void run_demo(DemoArgs args) {
  if (args.threads > 0) torch::set_num_threads(args.threads);
  std::string why = "asked for with --precision";
  if (args.precision.empty()) {
    const auto choice = fastest_precision(Accelerator(args.accelerator).device_type());
    args.precision = choice.precision.name();
    why = choice.reason;
  }
  std::cout << "volt demo: Fashion-MNIST from " << args.data << ", " << args.epochs << " epochs, LibTorch "
            << compat::torch_version() << ", " << torch::get_num_threads()
            << " threads\nCPU: " << CpuFeatures::host().summary() << "\nprecision " << args.precision << ": "
            << why << "\n";
  auto train_all = data::FashionMNIST(data::FashionMNIST::kTrain, args.data);
  train_all.normalize();
  auto train = train_all.subset(0, 55000), val = train_all.subset(55000, 60000);
  auto test = data::FashionMNIST(data::FashionMNIST::kTest, args.data);
  test.normalize();
  auto train_loader = torch::data::make_data_loader(train, torch::data::samplers::RandomSampler(55000),
                                                    torch::data::DataLoaderOptions(args.batch_size));
  auto val_loader = torch::data::make_data_loader(val, torch::data::samplers::SequentialSampler(5000),
                                                  torch::data::DataLoaderOptions(1000));
  auto test_loader = torch::data::make_data_loader(test, torch::data::samplers::SequentialSampler(10000),
                                                   torch::data::DataLoaderOptions(1000));
  const int64_t train_batches = (55000 + args.batch_size - 1) / args.batch_size;

  auto checkpoint = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().monitor("val_acc").mode("max").save_last(true).filename(
          "{epoch}-{val_acc:.4f}"));
  Trainer trainer(
      TrainerOptions()
          .accelerator(args.accelerator)
          .precision(args.precision)
          .max_epochs(args.epochs)
          .default_root_dir(args.root)
          .seed(42)
          .callbacks({checkpoint, std::make_shared<LearningRateMonitor>()})
          // Own folders, so that both loggers' runs are version_0 side by side (checkpoints go under the
          // first logger's folder, as in Lightning).
          .logger({std::make_shared<CSVLogger>(CSVLoggerOptions().save_dir(args.root).name("csv")),
                   std::make_shared<TensorBoardLogger>(
                       TensorBoardLoggerOptions().save_dir(args.root).name("tensorboard"))}));
  HParams hp;
  hp.set("epochs", args.epochs);
  models::FashionCNN model{nullptr};
  {
    auto scope = trainer.init_module();
    model = models::FashionCNN(hp);
  }
  const double fit_start = now_seconds();
  trainer.fit(*model, BatchSource(train_loader, train_batches), BatchSource(val_loader, 5));
  const double fit_seconds = now_seconds() - fit_start;
  const auto tested = trainer.test(*model, BatchSource(test_loader, 10));
  std::cout << "\nfit: " << fit_seconds << " s, " << trainer.global_step()
            << " steps; test accuracy (last epoch) " << tested.at("test_acc")
            << "\nbest checkpoint: " << checkpoint->best_model_path() << " (val_acc "
            << checkpoint->best_model_score().value_or(NAN) << ")\nlogs: " << trainer.log_dir() << "\n\n";

  // Rebuild from the best checkpoint, each way in its own process.
  std::cout << "Rebuilding the model from " << checkpoint->best_model_path() << ":\n";
  std::printf("%-7s %14s %16s %13s %10s %14s\n", "mode", "build+load_s", "rss_growth_MB", "peak_rss_MB",
              "test_acc", "uninitialized");
  double naive_seconds = 0, naive_growth = 0, row_model_bytes = 0;
  for (const std::string mode : {"naive", "volt"}) {
    const auto result =
        run_process({self_executable(), "demo-rebuild", "--mode", mode, "--ckpt",
                     checkpoint->best_model_path(), "--data", args.data, "--accelerator", args.accelerator,
                     "--precision", args.precision, "--threads", std::to_string(args.threads)});
    VOLT_CHECK(result.exit_code == 0, "demo-rebuild --mode ", mode, " failed: ", result.output);
    const auto row = json::parse(result.output.substr(result.output.rfind('{')));
    const double seconds = row["seconds"].get<double>(), growth = row["rss_growth_bytes"].get<double>();
    row_model_bytes = row["model_bytes"].get<double>();
    if (mode == "naive") {
      naive_seconds = seconds;
      naive_growth = growth;
    }
    std::printf("%-7s %14.4f %16.2f %13.1f %10.4f %14d", mode.c_str(), seconds, growth / 1e6,
                row["peak_rss_bytes"].get<double>() / 1e6, row["test_acc"].get<double>(),
                row["uninitialized"].get<int>());
    if (mode == "volt")
      std::printf("   %.1fx faster, %.2fx the memory", naive_seconds / seconds,
                  growth / std::max(1.0, naive_growth));
    std::printf("\n");
    std::fflush(stdout);
  }
  std::printf("(model: %.2f MB of parameters and buffers; each mode runs in its own process)\n",
              row_model_bytes / 1e6);
}

}  // namespace

void add_demo_commands(CLI::App& app) {
  auto args = std::make_shared<DemoArgs>();
  auto* demo =
      app.add_subcommand("demo", "train a CNN on Fashion-MNIST, then rebuild it from its checkpoint");
  demo->add_option("--data", args->data, "folder of the Fashion-MNIST IDX files");
  demo->add_option("--root", args->root, "where logs and checkpoints go");
  demo->add_option("--accelerator", args->accelerator, "cpu, cuda or auto");
  demo->add_option(
      "--precision", args->precision,
      "default: bf16-mixed where the CPU computes bf16 natively, else 32-true; bf16-true on CUDA");
  demo->add_option("--epochs", args->epochs);
  demo->add_option("--batch-size", args->batch_size);
  demo->add_option("--threads", args->threads, "intra-op threads (default: all cores)");
  demo->callback([args] { run_demo(*args); });

  auto mode = std::make_shared<std::string>(), ckpt = std::make_shared<std::string>();
  auto* child = app.add_subcommand("demo-rebuild", "one rebuild of `volt demo`, in this process");
  child->group("");  // internal
  child->add_option("--mode", *mode)->required();
  child->add_option("--ckpt", *ckpt)->required();
  child->add_option("--data", args->data);
  child->add_option("--accelerator", args->accelerator);
  child->add_option("--precision", args->precision)->required();
  child->add_option("--threads", args->threads);
  child->callback(
      [args, mode, ckpt] { std::cout << rebuild_child(*args, *mode, *ckpt).dump() << std::endl; });
}

}  // namespace volt::tools
