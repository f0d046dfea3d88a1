// Test and benchmark knobs of the dense search (dense_testing.hpp): not ragcore's API, bound only in the
// private submodule ragcore._core._testing.
#include "dense_testing.hpp"

#include <algorithm>

#include "dense_drivers.hpp"
#include "dense_kernels.hpp"
#include "ragcore/common.hpp"
#include "ragcore/parallel.hpp"

namespace ragcore::dense::testing {

void search_path(const Collection& c, const float* queries, int64_t nq, int k, int threads, int path,
                 int64_t* out_idx, float* out_scores) {
  detail::search_path(c, queries, nq, k, threads, path, out_idx, out_scores);
}

uint64_t read_probe(const void* data, size_t bytes, int threads) {
  // XOR of every 8-byte word: a pure streaming read (the benchmarks' memory-bandwidth reference).
  const uint64_t* w = static_cast<const uint64_t*>(data);
  const size_t n = bytes / 8;
  std::vector<uint64_t> part(static_cast<size_t>(std::max(threads, 1)), 0);
  parallel_for(n, threads, std::max<size_t>(n / static_cast<size_t>(std::max(threads, 1)), 1 << 16),
               [&](int t, size_t b, size_t e) {
                 uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                 size_t i = b;
                 for (; i + 4 <= e; i += 4) {
                   a0 ^= w[i];
                   a1 ^= w[i + 1];
                   a2 ^= w[i + 2];
                   a3 ^= w[i + 3];
                 }
                 for (; i < e; ++i) a0 ^= w[i];
                 part[static_cast<size_t>(t)] ^= a0 ^ a1 ^ a2 ^ a3;
               });
  uint64_t x = 0;
  for (uint64_t v : part) x ^= v;
  return x;
}

std::vector<std::string> isas() {
  std::vector<std::string> out;
  if (detail::cpu_has_amx()) out.emplace_back("amx");
  if (detail::cpu_has_avx512()) out.emplace_back("avx512");
  if (detail::cpu_has_avx2()) out.emplace_back("avx2");
  out.emplace_back("scalar");
  return out;
}

void set_isa(const std::string& name) {
  if (name == "auto") {
    detail::use_kernels(nullptr);
    return;
  }
  if (name == "scalar") {
    detail::use_kernels(&detail::kScalar);
    return;
  }
#ifdef RAGCORE_X86
  if (name == "avx2") {
    RAGCORE_CHECK(detail::cpu_has_avx2(), "this CPU lacks AVX2/FMA/F16C");
    detail::use_kernels(&detail::kAvx2);
    return;
  }
  if (name == "avx512") {
    RAGCORE_CHECK(detail::cpu_has_avx512(), "this CPU lacks AVX-512 F/BW/VL/DQ/VNNI");
    detail::use_kernels(&detail::kAvx512);
    return;
  }
  if (name == "amx") {
#ifdef RAGCORE_AMX_BUILD
    RAGCORE_CHECK(detail::cpu_has_amx(), "this CPU (or its operating system) does not offer AMX-BF16 with AVX-512 BF16");
    detail::use_kernels(&detail::kAmx);
    return;
#else
    RAGCORE_CHECK(false, "this ragcore was built without the AMX kernels (RAGCORE_NO_AMX, or a compiler "
                         "that predates them)");
#endif
  }
#else
  RAGCORE_CHECK(name != "avx2" && name != "avx512" && name != "amx", "x86 kernels are not built for this architecture");
#endif
  RAGCORE_CHECK(false, "unknown instruction set '" << name << "', expected 'auto', 'amx', 'avx512', 'avx2' or 'scalar'");
}

}  // namespace ragcore::dense::testing
