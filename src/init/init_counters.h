// Where init code adds to volt/init/init_stats.h's counters. Internal to init/.
#pragma once

#include <cstdint>

namespace volt::detail {

/// Seconds on a monotonic clock.
double counter_clock();

void count_allocation(bool huge_pages, int64_t bytes);
void count_prefault(double seconds, int64_t bytes);
void count_cpu_fill(double seconds, int64_t elements, int threads);

}  // namespace volt::detail
