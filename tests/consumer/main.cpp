// Builds a model in a bf16 init scope through the installed or embedded volt, and checks the dtype.
#include <volt/volt.h>

#include <torch/nn/modules/linear.h>

#include <iostream>

int main() {
  volt::Trainer trainer(volt::TrainerOptions().accelerator("cpu").precision("bf16-true"));
  auto scope = trainer.init_module();
  torch::nn::Linear linear(8, 4);
  const bool ok = linear->weight.scalar_type() == c10::kBFloat16;
  std::cout << (ok ? "consumer ok" : "consumer: wrong dtype") << "\n";
  return ok ? 0 : 1;
}
