// Test and benchmark knobs of the dense search. Not part of ragcore's API (csrc/include): private to
// csrc/src, and bound only in the private submodule ragcore._core._testing (csrc/bindings/dense.cpp),
// for the tests (both paths, every instruction set) and the benchmarks (the read-bandwidth reference).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ragcore/dense.hpp"

namespace ragcore::dense::testing {

/// dense::search forcing a path: 0 = auto, 1 = scan, 2 = blocked (for tests of both paths).
void search_path(const Collection& c, const float* queries, int64_t nq, int k, int threads, int path,
                 int64_t* out_indices, float* out_scores);

/// XOR of the 8-byte words of [data, data + bytes), read by `threads` threads: the benchmarks time it
/// as the machine's streaming read bandwidth.
uint64_t read_probe(const void* data, size_t bytes, int threads);

/// The instruction sets this CPU (and OS) runs, best first (see dense::isa), and an override of the
/// choice: set_isa("auto"|"amx"|"avx512"|"avx2"|"scalar") (raises value_error for an unknown name or an
/// ISA this CPU lacks; "auto" returns to the best one). Process-wide; a search in flight keeps the set it
/// started with.
std::vector<std::string> isas();
void set_isa(const std::string& name);

}  // namespace ragcore::dense::testing
