// Dense kernels: which set runs. The CPU's (and OS's) instruction sets, the best set it runs, and the
// set in use (detected once, or chosen by testing::set_isa, dense_testing.cpp).
#include <atomic>
#include <string>

#include "dense_kernels.hpp"
#include "ragcore/dense.hpp"

#ifdef RAGCORE_X86
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace ragcore::dense {
namespace detail {

#ifdef RAGCORE_X86
bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}

// AMX: the CPU's bits (CPUID leaf 7: AMX-BF16, AMX-TILE; sub-leaf 1: AVX512-BF16), then the kernel's
// permission to use the tile data state (Linux asks each process to request it); checked once.
bool cpu_has_amx() {
#ifndef RAGCORE_AMX_BUILD
  return false;
#else
  static const bool ok = [] {
    if (!cpu_has_avx512()) return false;
    unsigned a, b, c, d;
    // AMX-BF16, AMX-TILE, AMX-INT8
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 22) & 1) || !((d >> 24) & 1) || !((d >> 25) & 1))
      return false;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !((a >> 5) & 1)) return false;
#if defined(__linux__)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return false;
#endif
  }();
  return ok;
#endif
}

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
#else
bool cpu_has_avx2() { return false; }
bool cpu_has_avx512() { return false; }
bool cpu_has_amx() { return false; }
#endif

const Kernels* best_kernels() {
#ifdef RAGCORE_X86
#ifdef RAGCORE_AMX_BUILD
  if (cpu_has_amx()) return &kAmx;
#endif
  if (cpu_has_avx512()) return &kAvx512;
  if (cpu_has_avx2()) return &kAvx2;
#endif
  return &kScalar;
}

static std::atomic<const Kernels*> g_kernels{nullptr};  // the set in use; null until first asked

const Kernels& kernels() {
  const Kernels* k = g_kernels.load(std::memory_order_acquire);
  if (!k) {
    k = best_kernels();
    g_kernels.store(k, std::memory_order_release);
  }
  return *k;
}

void use_kernels(const Kernels* k) { g_kernels.store(k ? k : best_kernels()); }

}  // namespace detail

std::string isa() { return detail::kernels().name; }

}  // namespace ragcore::dense
