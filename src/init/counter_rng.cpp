// Placeholder until the counter-based generator lands (being written now).
#include "volt/init/counter_rng.h"
#include "volt/error.h"
namespace volt {
void fill_uniform_slice(at::Tensor&, RandomKey, int64_t, double, double) { VOLT_FAIL("not yet"); }
void fill_normal_slice(at::Tensor&, RandomKey, int64_t, double, double) { VOLT_FAIL("not yet"); }
void keyed_uniform_(at::Tensor&, RandomKey, double, double) { VOLT_FAIL("not yet"); }
void keyed_normal_(at::Tensor&, RandomKey, double, double) { VOLT_FAIL("not yet"); }
bool counter_rng_supports(c10::ScalarType) { return false; }
}  // namespace volt
