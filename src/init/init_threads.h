// The chunked parallel loop of volt's init threads (init_threads.cpp). Internal to init/.
#pragma once

#include <cstdint>
#include <functional>

namespace volt::detail {

/// Runs body(begin, end) over [0, n) in contiguous chunks on the init threads; chunk boundaries fall on
/// stream positions (first + begin) that are multiples of `align`. Returns the threads it ran on.
int parallel_chunks(int64_t n, int64_t first, int64_t align,
                    const std::function<void(int64_t, int64_t)>& body);

}  // namespace volt::detail
