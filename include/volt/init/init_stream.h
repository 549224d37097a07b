// Which definition of normal values volt's counter-based generator draws. Values are part of a
// checkpoint-free contract (repairs, deferred and sharded init recompute them), so a cheaper definition
// is a new stream id beside the old one, never a change to it.
#pragma once

namespace volt {

enum class InitStream : int {
  /// v1: one Philox4x32-10 word per normal value; Box–Muller over pairs of words with 24-bit uniforms
  /// (|z| up to 5.8). volt's values before streams were versioned.
  kPhiloxBoxMuller24 = 1,
  /// v2 (the default): one Philox4x32-10 word per Box–Muller pair, its low 16 bits the radius uniform and
  /// its high 16 bits the angle, so half the Philox work per value and a shorter log polynomial. |z| is
  /// at most sqrt(2 ln 2^17) = 4.85 (a standard normal exceeds that with probability 1.2e-6), and the two
  /// values of a pair lie on one of 2^16 rays; both are below what a bfloat16 or float16 weight can
  /// show. Uniform values and float64 normals are the same in every stream.
  kPhiloxBoxMuller16 = 2,
};

constexpr InitStream kDefaultInitStream = InitStream::kPhiloxBoxMuller16;

/// "philox-bm24" (v1) or "philox-bm16" (v2): the name benchmarks and messages print.
inline const char* init_stream_name(InitStream stream) {
  return stream == InitStream::kPhiloxBoxMuller24 ? "philox-bm24" : "philox-bm16";
}

}  // namespace volt
