// Philox4x32-10 written out again from the paper (Salmon et al., SC'11), independently of src/init/philox.h,
// for the tests that check the generator's values against their definition.
#pragma once

#include "volt/init/counter_rng.h"

#include <array>
#include <cstdint>

namespace volt::testing {

inline std::array<uint32_t, 4> reference_philox(std::array<uint32_t, 4> counter,
                                                std::array<uint32_t, 2> key) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t product0 = uint64_t{0xD2511F53} * counter[0];
    const uint64_t product1 = uint64_t{0xCD9E8D57} * counter[2];
    counter = {static_cast<uint32_t>(product1 >> 32) ^ counter[1] ^ key[0], static_cast<uint32_t>(product1),
               static_cast<uint32_t>(product0 >> 32) ^ counter[3] ^ key[1], static_cast<uint32_t>(product0)};
    key = {key[0] + 0x9E3779B9u, key[1] + 0xBB67AE85u};
  }
  return counter;
}

/// Block `block` of stream (seed, key): counter (block lo, block hi, key lo, key hi), Philox key seed.
inline std::array<uint32_t, 4> reference_block(RandomKey key, uint64_t block) {
  return reference_philox({static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                           static_cast<uint32_t>(key.key), static_cast<uint32_t>(key.key >> 32)},
                          {static_cast<uint32_t>(key.seed), static_cast<uint32_t>(key.seed >> 32)});
}

}  // namespace volt::testing
