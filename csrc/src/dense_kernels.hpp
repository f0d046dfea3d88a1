// Private to csrc/src (not part of ragcore's headers in csrc/include): the contract between the dense
// kernels and the code that uses them. The kernel sets, one file each: dense_scalar.cpp, dense_avx2.cpp
// (AVX2 + FMA + F16C), dense_avx512.cpp (AVX-512 F/BW/VL/DQ + VNNI) and dense_amx.cpp (AMX-BF16 /
// AMX-INT8); dense_dispatch.cpp picks one at run time; the drivers (dense_scan.cpp, dense_blocked.cpp,
// dense.cpp) call them through the table. See dense.hpp for the design.
//
// ISA containment: the SIMD kernels are compiled with per-function target attributes (RAGCORE_AVX2 and
// RAGCORE_AVX512 below, RAGCORE_AMX in dense_amx.cpp), never with -mavx2 and the like for a whole file,
// so everything not marked is portable x86-64 / aarch64 code. The kernels are leaf functions on raw
// pointers with no std templates instantiated inside them, and their helpers (inline functions and
// templates, which carry the same attribute) have internal linkage in the kernel's own file (static,
// or its unnamed namespace): no AVX2 / AVX-512 code can end up in an inline function or template
// instance that other code shares (the linker keeps one copy of such a function, which could be a SIMD
// one). What this header shares is portable: the tables, the constants, half_to_float. The kernels
// themselves, the entries of the tables, have external linkage in ragcore::dense::detail (a table of
// one file reuses kernels of another) and are declared below with the attribute of their definition:
// only a table chosen by dense_dispatch.cpp for a CPU that runs them may call them.
#pragma once
#include <cstdint>
#include <cstring>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define RAGCORE_X86 1
#define RAGCORE_AVX2 __attribute__((target("avx2,fma,f16c")))
#define RAGCORE_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
// AMX intrinsics need GCC >= 11 or clang >= 12: an older compiler builds everything but the AMX set
// (RAGCORE_NO_AMX leaves it out on purpose, to build and test that configuration)
#if !defined(RAGCORE_NO_AMX) && ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#define RAGCORE_AMX_BUILD 1
#endif
#endif

namespace ragcore::dense::detail {

constexpr int kPanel = 16;               // rows per packed panel (two 8-float or one 16-float vector)

// ---------------------------------------------------------------------------------------------
// Kernel table
// ---------------------------------------------------------------------------------------------
struct Kernels {
  const char* name;
  // out[r] = q . X[r] for r < nr
  void (*scores_f32)(const float* q, const float* X, int64_t nr, int dim, float* out);
  void (*scores_f16)(const float* q, const uint16_t* X, int64_t nr, int dim, float* out);
  // out[r] = qq . X[r] in integers (qq: int8 query in [-127, 127])
  void (*dots_i8)(const int8_t* qq, const int8_t* X, int64_t nr, int dim, int32_t* out);
  // exact float query . int8 row
  float (*dot_f32_i8)(const float* q, const int8_t* x, int dim);
  // rows [0, nr) of X into panels of kPanel rows: P[p][d][j] = X[p * kPanel + j][d], zero past nr
  void (*pack)(const float* X, int64_t nr, int dim, float* P);
  // queries per register tile of tile_f32 (the driver's query blocks are multiples of it)
  int tile_q;
  // out[i * ldo + p * kPanel + j] = query i . row j of panel p, for i < nq (<= tile_q), p < np; the
  // queries come packed by pack_queries: Qp[d * tile_q + i] = Q[i][d], zero for i >= nq
  void (*tile_f32)(const float* Qp, int nq, const float* P, int np, int dim, float* out, int64_t ldo);
  // rows to float32 (i8: times the row scale)
  void (*f16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  void (*i8_to_f32)(const int8_t* src, const float* aux, int64_t rows, int dim, float* dst);
  // positions p < n with s[p] >= thr, written to pos; returns their count
  int (*filter_ge)(const float* s, int n, float thr, int* pos);
  // batches by AMX bf16 tiles with exact re-scoring (null without AMX); see search_blocked_amx
  const struct AmxKernels* amx = nullptr;
  // batches of int8 codes (int8 rows, or the prefilter of float rows) by integer tiles (vpdpbusd, or
  // AMX-INT8) with exact re-scoring (null without AVX-512 VNNI); see search_blocked_i8
  const struct I8TileKernels* i8tile = nullptr;
  // the few-query int8 scan's bounds and selection for n rows (a multiple of 16) with int8 dot products
  // dots and per-row aux of `stride` floats (2: int8 rows, (scale, L1); 4: a prefilter, see
  // Collection::pre_aux): the rows whose upper bound reaches thr, as in search_blocked_i8's filter (null:
  // the scalar loop, which also takes the rows past the last multiple of 16)
  int (*scan_filter)(const int32_t* dots, const float* aux, int stride, int n, float sq, float en, float qn,
                     float rnd, float thr, int* pos, float* lo, float* hi) = nullptr;
};

// int8 tiles: queries as unsigned bytes (qq + 128) against signed row codes, 4 dimensions per 32-bit lane;
// 12 queries x 32 rows per register tile (AVX-512 VNNI) or 32 x 32 per group of AMX tiles.
constexpr int kI8TileQ = 12;
struct I8TileKernels {
  // queries per tile call; dimension groups (of 4) rounded up to a multiple of group_align; AMX takes the
  // queries row-major (bytes qq + 128, groups * 4 per query) instead of Qp's interleaved int32 layout
  int tile_q, group_align;
  bool row_major_queries;
  void (*begin)();  // tile configuration (AMX) around a thread's calls, or null
  void (*end)();
  // rows [0, nr) of codes X (nr, dim) into panels of 16 rows, P[p][g][j] = the 4 codes of row p*16+j at
  // dimensions 4g..4g+3 as one int32 (zero past dim and past nr; np rounded up to even), rs[j] = the
  // sum of row j's codes
  void (*pack)(const int8_t* X, int64_t nr, int dim, int groups, int32_t* P, int32_t* rs);
  // out[i * ldo + j] = sum_d (qq_i[d] + 128) * x_j[d] for i < nq (<= tile_q; AMX computes all tile_q rows),
  // j < 16 * np; Qp[g * tile_q + i] (or, row-major, Qp[i * groups + g]) = the 4 unsigned query bytes of
  // query i at dimensions 4g..4g+3
  void (*tile)(const int32_t* Qp, int nq, const int32_t* P, int np, int groups, int32_t* out, int64_t ldo);
  // for j < n: a = scale[j] * sq * (dot[j] - 128 rs[j]), bound = (min(sq b1[j], en b2[j]) + qn c3[j]) (1 + 1e-5)
  // + 1e-5 |a| + 1e-30 (c3 = b3 + rnd b4, see search_blocked_i8); writes the positions with a + bound >= thr
  // to pos and their a - bound, a + bound to lo, hi; returns their count
  int (*filter)(const int32_t* dot, const int32_t* rs, const float* scale, const float* b1, const float* b2,
                const float* c3, int n, float sq, float en, float qn, float thr, int* pos, float* lo, float* hi);
};

// AMX (bf16 tile products): rows and queries converted to bf16 (dimensions padded to kAmxChunk), scores
// of 32 queries x 32 rows per register-tile group, accumulated in float32 by the tile unit.
constexpr int kAmxChunk = 32;       // dimensions per tile product (64 bytes of bf16)
constexpr int kAmxGroupQ = 32;      // queries per tile group (two 16-row A tiles)
struct AmxKernels {
  void (*begin)();                  // configure this thread's tiles
  void (*end)();                    // release them
  // rows [0, nr) of X (float32, (nr, dim)) as bf16 panels of 16 rows in the tile unit's pair-interleaved
  // layout: P[p][c][k2][j][t] = bf16(X[16 p + j][32 c + 2 k2 + t]), zero past nr and dim, for an even
  // number of panels; norms[r] = |X[r]|_2 (zero past nr); scratch: dpad uint16
  void (*pack)(const float* X, int64_t nr, int dim, int dpad, uint16_t* P, float* norms, uint16_t* scratch);
  // m queries (float32, (m, dim)) as bf16 rows of dpad (zero past dim), m_pad rows (zero past m)
  void (*queries)(const float* Q, int64_t m, int64_t m_pad, int dim, int dpad, uint16_t* out);
  // out[i * ldo + 16 p + j] = bf16 query i . bf16 row j of panel p for i < 32, p < np (even)
  void (*scores)(const uint16_t* Qb, int dpad, const uint16_t* P, int np, float* out, int64_t ldo);
  // positions t < n with a[t] + amx_bound(norms[t], qs) >= thr, written to pos; their count
  int (*filter)(const float* a, const float* norms, int n, float qs, float thr, int* pos);
};

/// The slack of a tile score of a row of norm |x| for a query whose qs = rel * |q| (search_blocked_amx).
inline float amx_bound(float norm, float qs) { return qs * norm + 1e-30f; }

// IEEE half (bits) to float, exactly; portable (the scalar kernels, and the AVX2 conversion's tail)
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        man <<= 1;
        ++e;
      } while (!(man & 0x400u));
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// ---------------------------------------------------------------------------------------------
// The kernel sets (dense_<isa>.cpp) and their entries
// ---------------------------------------------------------------------------------------------
extern const Kernels kScalar;
void scores_f32_scalar(const float* q, const float* X, int64_t nr, int dim, float* out);
void scores_f16_scalar(const float* q, const uint16_t* X, int64_t nr, int dim, float* out);
void dots_i8_scalar(const int8_t* qq, const int8_t* X, int64_t nr, int dim, int32_t* out);
float dot_f32_i8_scalar(const float* q, const int8_t* x, int dim);
void pack_scalar(const float* X, int64_t nr, int dim, float* P);
void tile_f32_scalar(const float* Qp, int nq, const float* P, int np, int dim, float* out, int64_t ldo);
void f16_to_f32_scalar(const uint16_t* src, float* dst, int64_t n);
void i8_to_f32_scalar(const int8_t* src, const float* aux, int64_t rows, int dim, float* dst);
int filter_ge_scalar(const float* s, int n, float thr, int* pos);

#ifdef RAGCORE_X86
extern const Kernels kAvx2;
RAGCORE_AVX2 void scores_f32_avx2(const float* q, const float* X, int64_t nr, int dim, float* out);
RAGCORE_AVX2 void scores_f16_avx2(const float* q, const uint16_t* X, int64_t nr, int dim, float* out);
RAGCORE_AVX2 void dots_i8_avx2(const int8_t* qq, const int8_t* X, int64_t nr, int dim, int32_t* out);
RAGCORE_AVX2 float dot_f32_i8_avx2(const float* q, const int8_t* x, int dim);
RAGCORE_AVX2 void pack_avx2(const float* X, int64_t nr, int dim, float* P);
RAGCORE_AVX2 void tile_f32_avx2(const float* Qp, int nq, const float* P, int np, int dim, float* out, int64_t ldo);
RAGCORE_AVX2 void f16_to_f32_avx2(const uint16_t* src, float* dst, int64_t n);
RAGCORE_AVX2 void i8_to_f32_avx2(const int8_t* src, const float* aux, int64_t rows, int dim, float* dst);
RAGCORE_AVX2 int filter_ge_avx2(const float* s, int n, float thr, int* pos);

// The AVX-512 set reuses the AVX2 kernels for float32 scans, packing, conversions and filtering;
// the AMX set reuses the AVX-512 ones, and their query tile (kAvx512TileQ queries per register tile).
extern const Kernels kAvx512;
constexpr int kAvx512TileQ = 12;
RAGCORE_AVX512 void scores_f16_avx512(const float* q, const uint16_t* X, int64_t nr, int dim, float* out);
RAGCORE_AVX512 void dots_i8_avx512(const int8_t* qq, const int8_t* X, int64_t nr, int dim, int32_t* out);
RAGCORE_AVX512 void tile_f32_avx512(const float* Qp, int nq, const float* P, int np, int dim, float* out,
                                    int64_t ldo);
void i8_pack(const int8_t* X, int64_t nr, int dim, int groups, int32_t* P, int32_t* rs);  // portable
RAGCORE_AVX512 void i8_tile_avx512(const int32_t* Qp, int nq, const int32_t* P, int np, int groups, int32_t* out,
                                   int64_t ldo);
RAGCORE_AVX512 int i8_filter_avx512(const int32_t* dot, const int32_t* rs, const float* scale, const float* b1,
                                    const float* b2, const float* c3, int n, float sq, float en, float qn, float thr,
                                    int* pos, float* lo, float* hi);
RAGCORE_AVX512 int scan_filter_avx512(const int32_t* dots, const float* aux, int stride, int n, float sq, float en,
                                      float qn, float rnd, float thr, int* pos, float* lo, float* hi);

#ifdef RAGCORE_AMX_BUILD
extern const Kernels kAmx;  // its own entries stay in dense_amx.cpp
#endif
#endif  // RAGCORE_X86

// ---------------------------------------------------------------------------------------------
// Dispatch (dense_dispatch.cpp)
// ---------------------------------------------------------------------------------------------
/// What this CPU (and OS) runs: AVX2 + FMA + F16C; AVX-512 F/BW/VL/DQ + VNNI; AMX-BF16/INT8 with
/// AVX-512 BF16 and the kernel's permission to use the tiles (false where the set is not built).
bool cpu_has_avx2();
bool cpu_has_avx512();
bool cpu_has_amx();
/// The best set this CPU runs.
const Kernels* best_kernels();
/// The set in use: best_kernels() unless use_kernels chose another.
const Kernels& kernels();
/// Make `k` the set in use (null: best_kernels()); the caller checked that the CPU runs it.
void use_kernels(const Kernels* k);

}  // namespace ragcore::dense::detail
