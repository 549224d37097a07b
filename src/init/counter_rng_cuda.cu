#include "counter_rng_kernels.h"
