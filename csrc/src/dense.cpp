// Dense top-k search: kernels (scalar, AVX2+FMA+F16C and AVX-512+VNNI, chosen at run time) and the drivers.
// See dense.hpp for the design. The SIMD kernels are leaf functions on raw pointers with internal
// linkage (no std templates inside), so compiling them for AVX2 never leaks AVX2 code into shared
// inline functions; everything else is portable C++.
#include "ragcore/dense.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ragcore/common.hpp"
#include "ragcore/parallel.hpp"
#include "ragcore/topk.hpp"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define RAGCORE_X86 1
#include <cpuid.h>
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#define RAGCORE_AVX2 __attribute__((target("avx2,fma,f16c")))
#define RAGCORE_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
// AMX intrinsics need GCC >= 11 or clang >= 12: an older compiler builds everything but the AMX set
// (RAGCORE_NO_AMX leaves it out on purpose, to build and test that configuration)
#if !defined(RAGCORE_NO_AMX) && ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#define RAGCORE_AMX_BUILD 1
#endif
#endif

namespace ragcore::dense {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kScanBlock = 256;          // rows scored into L1 before selection (scan path)
constexpr int64_t kScanChunk = 16384;    // rows per task when one query's rows are split over threads
constexpr int64_t kRowBlock = 192;       // rows per L2 block (blocked path); a multiple of kPanel
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

// ----------------------------------- scalar ---------------------------------------------------
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

void scores_f32_scalar(const float* q, const float* X, int64_t nr, int dim, float* out) {
  for (int64_t r = 0; r < nr; ++r) {
    const float* x = X + r * dim;
    float s = 0.f;
    for (int d = 0; d < dim; ++d) s += q[d] * x[d];
    out[r] = s;
  }
}
void scores_f16_scalar(const float* q, const uint16_t* X, int64_t nr, int dim, float* out) {
  for (int64_t r = 0; r < nr; ++r) {
    const uint16_t* x = X + r * dim;
    float s = 0.f;
    for (int d = 0; d < dim; ++d) s += q[d] * half_to_float(x[d]);
    out[r] = s;
  }
}
void dots_i8_scalar(const int8_t* qq, const int8_t* X, int64_t nr, int dim, int32_t* out) {
  for (int64_t r = 0; r < nr; ++r) {
    const int8_t* x = X + r * dim;
    int32_t s = 0;
    for (int d = 0; d < dim; ++d) s += static_cast<int32_t>(qq[d]) * x[d];
    out[r] = s;
  }
}
float dot_f32_i8_scalar(const float* q, const int8_t* x, int dim) {
  float s = 0.f;
  for (int d = 0; d < dim; ++d) s += q[d] * static_cast<float>(x[d]);
  return s;
}
void pack_scalar(const float* X, int64_t nr, int dim, float* P) {
  const int64_t np = (nr + kPanel - 1) / kPanel;
  for (int64_t p = 0; p < np; ++p) {
    float* o = P + p * kPanel * dim;
    for (int j = 0; j < kPanel; ++j) {
      const int64_t r = p * kPanel + j;
      for (int d = 0; d < dim; ++d) o[static_cast<int64_t>(d) * kPanel + j] = r < nr ? X[r * dim + d] : 0.f;
    }
  }
}
constexpr int kScalarTileQ = 4;
void tile_f32_scalar(const float* Qp, int nq, const float* P, int np, int dim, float* out, int64_t ldo) {
  for (int i = 0; i < nq; ++i)
    for (int p = 0; p < np; ++p) {
      float acc[kPanel] = {};
      const float* panel = P + static_cast<int64_t>(p) * kPanel * dim;
      for (int d = 0; d < dim; ++d)
        for (int j = 0; j < kPanel; ++j) acc[j] += Qp[static_cast<int64_t>(d) * kScalarTileQ + i] * panel[d * kPanel + j];
      for (int j = 0; j < kPanel; ++j) out[i * ldo + p * kPanel + j] = acc[j];
    }
}
void f16_to_f32_scalar(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
}
void i8_to_f32_scalar(const int8_t* src, const float* aux, int64_t rows, int dim, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const float s = aux[2 * r];
    for (int d = 0; d < dim; ++d) dst[r * dim + d] = s * static_cast<float>(src[r * dim + d]);
  }
}
int filter_ge_scalar(const float* s, int n, float thr, int* pos) {
  int c = 0;
  for (int p = 0; p < n; ++p) {
    pos[c] = p;
    c += s[p] >= thr;
  }
  return c;
}

const Kernels kScalar = {"scalar",         scores_f32_scalar, scores_f16_scalar, dots_i8_scalar,
                         dot_f32_i8_scalar, pack_scalar,       kScalarTileQ,      tile_f32_scalar,
                         f16_to_f32_scalar, i8_to_f32_scalar,  filter_ge_scalar};

// ----------------------------------- AVX2 -----------------------------------------------------
#ifdef RAGCORE_X86
RAGCORE_AVX2 inline __m256i tail_mask(int rem) {  // first rem lanes set, 0 < rem < 8
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), idx);
}
RAGCORE_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
RAGCORE_AVX2 inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// NR rows against one float query: acc[j] over the dimensions, the tail by masked loads.
// Eight floats of row data: from float, or from half by F16C.
RAGCORE_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
RAGCORE_AVX2 inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
RAGCORE_AVX2 inline __m256 load_tail(const float* p, int rem) { return _mm256_maskload_ps(p, tail_mask(rem)); }
RAGCORE_AVX2 inline __m256 load_tail(const uint16_t* p, int rem) {  // no 16-bit masked load in AVX2
  alignas(16) uint16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(t, p, static_cast<size_t>(rem) * 2);
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
}

// One float query against rows of T (float or half), one row after the other with four
// accumulators: a single sequential stream, which the hardware prefetcher follows at full read
// bandwidth (walking 8 rows side by side reached only ~60-80% of it here).
template <class T>
RAGCORE_AVX2 void scores_avx2(const float* q, const T* X, int64_t nr, int dim, float* out) {
  for (int64_t r = 0; r < nr; ++r) {
    const T* x = X + r * dim;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int d = 0;
    for (; d + 32 <= dim; d += 32) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), load8(x + d), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 8), load8(x + d + 8), a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 16), load8(x + d + 16), a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 24), load8(x + d + 24), a3);
    }
    for (; d + 8 <= dim; d += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), load8(x + d), a0);
    if (d < dim) a1 = _mm256_fmadd_ps(load_tail(q + d, dim - d), load_tail(x + d, dim - d), a1);
    out[r] = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  }
}
RAGCORE_AVX2 void scores_f32_avx2(const float* q, const float* X, int64_t nr, int dim, float* out) {
  scores_avx2(q, X, nr, dim, out);
}
RAGCORE_AVX2 void scores_f16_avx2(const float* q, const uint16_t* X, int64_t nr, int dim, float* out) {
  scores_avx2(q, X, nr, dim, out);
}

// int8 . int8 with q in [-127, 127]: |q| (unsigned) times sign(q) * x (signed) by maddubs; pairs of
// products fit int16 (2 * 127 * 127 < 32768), widened to int32 by madd with ones.
// One row after the other (a single stream, as in scores_avx2).
RAGCORE_AVX2 void dots_i8_avx2(const int8_t* qq, const int8_t* X, int64_t nr, int dim, int32_t* out) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t r = 0; r < nr; ++r) {
    const int8_t* x = X + r * dim;
    __m256i acc = _mm256_setzero_si256();
    int d = 0;
    for (; d + 32 <= dim; d += 32) {
      const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qq + d));
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + d));
      const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(qv), _mm256_sign_epi8(xv, qv));
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
    }
    int32_t sum = hsum_epi32(acc);
    for (; d < dim; ++d) sum += static_cast<int32_t>(qq[d]) * x[d];
    out[r] = sum;
  }
}
RAGCORE_AVX2 float dot_f32_i8_avx2(const float* q, const int8_t* x, int dim) {
  __m256 acc = _mm256_setzero_ps();
  int d = 0;
  for (; d + 8 <= dim; d += 8) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(x + d));
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), acc);
  }
  float s = hsum(acc);
  for (; d < dim; ++d) s += q[d] * static_cast<float>(x[d]);
  return s;
}

// Packing: 8 rows x 8 dimensions at a time by an in-register transpose, scalar at the edges.
RAGCORE_AVX2 inline void transpose8(const float* src, int64_t ld, float* dst, int64_t ldd) {
  __m256 r[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + j * ld);
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst + 0 * ldd, _mm256_permute2f128_ps(s0, s4, 0x20));
  _mm256_storeu_ps(dst + 1 * ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
  _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
  _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
  _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
  _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
  _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
  _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
}
RAGCORE_AVX2 void pack_avx2(const float* X, int64_t nr, int dim, float* P) {
  const int64_t np = (nr + kPanel - 1) / kPanel;
  for (int64_t p = 0; p < np; ++p) {
    float* o = P + p * kPanel * dim;
    for (int h = 0; h < kPanel; h += 8) {
      const int64_t r0 = p * kPanel + h;
      int d = 0;
      if (r0 + 8 <= nr)
        for (; d + 8 <= dim; d += 8) transpose8(X + r0 * dim + d, dim, o + static_cast<int64_t>(d) * kPanel + h, kPanel);
      for (; d < dim; ++d)
        for (int j = 0; j < 8; ++j) o[static_cast<int64_t>(d) * kPanel + h + j] = r0 + j < nr ? X[(r0 + j) * dim + d] : 0.f;
    }
  }
}

// Register tile: NQ queries (broadcast one float at a time from the packed queries, at constant
// offsets) x one panel of 16 rows (two vectors per dimension): 12 accumulators, 12 FMAs per 2 panel
// loads + 6 broadcasts, and the scores come out laid along the rows, ready for selection (no
// horizontal sums).
constexpr int kAvx2TileQ = 6;
template <int NQ>
RAGCORE_AVX2 inline void panel_tile(const float* Qp, const float* P, int dim, float* out, int64_t ldo) {
  __m256 c0[NQ], c1[NQ];
#pragma GCC unroll 6
  for (int i = 0; i < NQ; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  for (int d = 0; d < dim; ++d) {
    const __m256 b0 = _mm256_loadu_ps(P + d * kPanel), b1 = _mm256_loadu_ps(P + d * kPanel + 8);
    const float* q = Qp + static_cast<int64_t>(d) * kAvx2TileQ;
#pragma GCC unroll 6
    for (int i = 0; i < NQ; ++i) {
      const __m256 a = _mm256_broadcast_ss(q + i);
      c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < NQ; ++i) {
    _mm256_storeu_ps(out + i * ldo, c0[i]);
    _mm256_storeu_ps(out + i * ldo + 8, c1[i]);
  }
}
template <int NQ>
RAGCORE_AVX2 inline void panels(const float* Qp, const float* P, int np, int dim, float* out, int64_t ldo) {
  for (int p = 0; p < np; ++p) panel_tile<NQ>(Qp, P + static_cast<int64_t>(p) * kPanel * dim, dim, out + p * kPanel, ldo);
}
RAGCORE_AVX2 void tile_f32_avx2(const float* Qp, int nq, const float* P, int np, int dim, float* out, int64_t ldo) {
  switch (nq) {
    case 6: panels<6>(Qp, P, np, dim, out, ldo); break;
    case 5: panels<5>(Qp, P, np, dim, out, ldo); break;
    case 4: panels<4>(Qp, P, np, dim, out, ldo); break;
    case 3: panels<3>(Qp, P, np, dim, out, ldo); break;
    case 2: panels<2>(Qp, P, np, dim, out, ldo); break;
    case 1: panels<1>(Qp, P, np, dim, out, ldo); break;
    default: break;
  }
}
RAGCORE_AVX2 void f16_to_f32_avx2(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = half_to_float(src[i]);
}
RAGCORE_AVX2 void i8_to_f32_avx2(const int8_t* src, const float* aux, int64_t rows, int dim, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const __m256 s = _mm256_set1_ps(aux[2 * r]);
    const int8_t* x = src + r * dim;
    float* o = dst + r * dim;
    int d = 0;
    for (; d + 8 <= dim; d += 8) {
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(x + d));
      _mm256_storeu_ps(o + d, _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b))));
    }
    for (; d < dim; ++d) o[d] = aux[2 * r] * static_cast<float>(x[d]);
  }
}
RAGCORE_AVX2 int filter_ge_avx2(const float* s, int n, float thr, int* pos) {
  int c = 0, p = 0;
  const __m256 t = _mm256_set1_ps(thr);
  for (; p + 8 <= n; p += 8) {
    unsigned m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + p), t, _CMP_GE_OQ)));
    while (m) {
      pos[c++] = p + __builtin_ctz(m);
      m &= m - 1;
    }
  }
  for (; p < n; ++p) {
    pos[c] = p;
    c += s[p] >= thr;
  }
  return c;
}

const Kernels kAvx2 = {"avx2",          scores_f32_avx2, scores_f16_avx2, dots_i8_avx2,   dot_f32_i8_avx2, pack_avx2,
                       kAvx2TileQ,      tile_f32_avx2,   f16_to_f32_avx2, i8_to_f32_avx2, filter_ge_avx2};

// ----------------------------------- AVX-512 --------------------------------------------------
// AVX-512 F/BW/VL/DQ + VNNI (Cascade Lake, Ice Lake, Sapphire Rapids, Zen 4 and later): 16-float
// vectors, masked tails, and int8 dot products by vpdpbusd. Packing, conversions, filtering and the
// exact re-score reuse the AVX2 kernels (valid on these CPUs, and not where the time goes).

// One query against half rows, one row after the other (as scores_avx2), 64 dimensions per step in
// four accumulators, the tail by masked loads. float32 rows keep the AVX2 scan: 64-byte loads of
// rows that numpy aligns to 16 bytes split a cache line each, and measured 10% slower here.
RAGCORE_AVX512 inline __m512 load16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
RAGCORE_AVX512 void scores_f16_avx512(const float* q, const uint16_t* X, int64_t nr, int dim, float* out) {
  const int rem = dim % 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << rem) - 1u);
  for (int64_t r = 0; r < nr; ++r) {
    const uint16_t* x = X + r * dim;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int d = 0;
    for (; d + 64 <= dim; d += 64) {
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), load16(x + d), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + d + 16), load16(x + d + 16), a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(q + d + 32), load16(x + d + 32), a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(q + d + 48), load16(x + d + 48), a3);
    }
    for (; d + 16 <= dim; d += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), load16(x + d), a0);
    if (rem)
      a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, q + d), _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail, x + d)), a1);
    out[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
}

// int8 . int8 by vpdpbusd, which multiplies unsigned by signed bytes: the row byte x is read as the
// unsigned x + 128 (x XOR 0x80), so the sum is qq . x + 128 * sum(qq), and the second term, a
// constant of the query, is subtracted. Exact in int32 (|sum| <= dim * 255 * 127).
RAGCORE_AVX512 void dots_i8_avx512(const int8_t* qq, const int8_t* X, int64_t nr, int dim, int32_t* out) {
  int32_t qsum = 0;
  for (int d = 0; d < dim; ++d) qsum += qq[d];
  const int32_t bias = 128 * qsum;
  const int rem = dim % 64;
  const __mmask64 tail = rem ? (~0ull >> (64 - rem)) : 0ull;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t r = 0; r < nr; ++r) {
    const int8_t* x = X + r * dim;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0;
    int d = 0;
    for (; d + 128 <= dim; d += 128) {
      const __m512i x0 = _mm512_xor_si512(_mm512_loadu_si512(x + d), flip);
      const __m512i x1 = _mm512_xor_si512(_mm512_loadu_si512(x + d + 64), flip);
      a0 = _mm512_dpbusd_epi32(a0, x0, _mm512_loadu_si512(qq + d));
      a1 = _mm512_dpbusd_epi32(a1, x1, _mm512_loadu_si512(qq + d + 64));
    }
    for (; d + 64 <= dim; d += 64)
      a0 = _mm512_dpbusd_epi32(a0, _mm512_xor_si512(_mm512_loadu_si512(x + d), flip), _mm512_loadu_si512(qq + d));
    if (rem) {  // zero bytes past the end in both: they add nothing (0 + 128 times a zero query byte)
      const __m512i xt = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, x + d), flip);
      a1 = _mm512_dpbusd_epi32(a1, xt, _mm512_maskz_loadu_epi8(tail, qq + d));
    }
    out[r] = _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1)) - bias;
  }
}

// Register tile: NQ queries (broadcast from the packed queries at constant offsets) x NP panels of
// 16 rows (one vector per panel and dimension): up to 12 x 2 = 24 accumulators, 24 FMAs per 2
// panel loads + 12 broadcasts.
constexpr int kAvx512TileQ = 12;
template <int NQ, int NP>
RAGCORE_AVX512 inline void panel_tile512(const float* Qp, const float* P, int dim, float* out, int64_t ldo) {
  __m512 c[NP][NQ];
#pragma GCC unroll 2
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 12
    for (int i = 0; i < NQ; ++i) c[p][i] = _mm512_setzero_ps();
  const int64_t pstride = static_cast<int64_t>(kPanel) * dim;
  for (int d = 0; d < dim; ++d) {
    __m512 b[NP];
#pragma GCC unroll 2
    for (int p = 0; p < NP; ++p) b[p] = _mm512_loadu_ps(P + p * pstride + d * kPanel);
    const float* q = Qp + static_cast<int64_t>(d) * kAvx512TileQ;
#pragma GCC unroll 12
    for (int i = 0; i < NQ; ++i) {
      const __m512 a = _mm512_set1_ps(q[i]);
#pragma GCC unroll 2
      for (int p = 0; p < NP; ++p) c[p][i] = _mm512_fmadd_ps(a, b[p], c[p][i]);
    }
  }
#pragma GCC unroll 2
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 12
    for (int i = 0; i < NQ; ++i) _mm512_storeu_ps(out + i * ldo + p * kPanel, c[p][i]);
}
template <int NQ>
RAGCORE_AVX512 inline void panels512(const float* Qp, const float* P, int np, int dim, float* out, int64_t ldo) {
  const int64_t pstride = static_cast<int64_t>(kPanel) * dim;
  int p = 0;
  for (; p + 2 <= np; p += 2) panel_tile512<NQ, 2>(Qp, P + p * pstride, dim, out + p * kPanel, ldo);
  if (p < np) panel_tile512<NQ, 1>(Qp, P + p * pstride, dim, out + p * kPanel, ldo);
}
RAGCORE_AVX512 void tile_f32_avx512(const float* Qp, int nq, const float* P, int np, int dim, float* out,
                                    int64_t ldo) {
  switch (nq) {
    case 12: panels512<12>(Qp, P, np, dim, out, ldo); break;
    case 11: panels512<11>(Qp, P, np, dim, out, ldo); break;
    case 10: panels512<10>(Qp, P, np, dim, out, ldo); break;
    case 9: panels512<9>(Qp, P, np, dim, out, ldo); break;
    case 8: panels512<8>(Qp, P, np, dim, out, ldo); break;
    case 7: panels512<7>(Qp, P, np, dim, out, ldo); break;
    case 6: panels512<6>(Qp, P, np, dim, out, ldo); break;
    case 5: panels512<5>(Qp, P, np, dim, out, ldo); break;
    case 4: panels512<4>(Qp, P, np, dim, out, ldo); break;
    case 3: panels512<3>(Qp, P, np, dim, out, ldo); break;
    case 2: panels512<2>(Qp, P, np, dim, out, ldo); break;
    case 1: panels512<1>(Qp, P, np, dim, out, ldo); break;
    default: break;
  }
}

void i8_pack(const int8_t* X, int64_t nr, int dim, int groups, int32_t* P, int32_t* rs) {
  const int64_t np = ((nr + 15) / 16 + 1) / 2 * 2;
  for (int64_t p = 0; p < np; ++p) {
    int32_t* panel = P + p * groups * 16;
    for (int j = 0; j < 16; ++j) {
      const int64_t row = p * 16 + j;
      if (row >= nr) {
        for (int g = 0; g < groups; ++g) panel[g * 16 + j] = 0;
        continue;
      }
      const int8_t* x = X + row * dim;
      int32_t sum = 0;
      int g = 0;
      for (; 4 * g + 4 <= dim; ++g) {
        int32_t w;
        std::memcpy(&w, x + 4 * g, 4);
        panel[g * 16 + j] = w;
        sum += x[4 * g] + x[4 * g + 1] + x[4 * g + 2] + x[4 * g + 3];
      }
      for (; g < groups; ++g) {
        int8_t b[4] = {0, 0, 0, 0};
        for (int t = 0; t < 4 && 4 * g + t < dim; ++t) {
          b[t] = x[4 * g + t];
          sum += b[t];
        }
        int32_t w;
        std::memcpy(&w, b, 4);
        panel[g * 16 + j] = w;
      }
      rs[row] = sum;
    }
  }
}

template <int NQ>
RAGCORE_AVX512 inline void i8_tile_pair(const int32_t* Qp, const int32_t* P0, const int32_t* P1, int groups,
                                        int32_t* out, int64_t ldo) {
  __m512i c0[NQ], c1[NQ];
#pragma GCC unroll 12
  for (int i = 0; i < NQ; ++i) c0[i] = c1[i] = _mm512_setzero_si512();
  for (int g = 0; g < groups; ++g) {
    const __m512i x0 = _mm512_loadu_si512(P0 + g * 16), x1 = _mm512_loadu_si512(P1 + g * 16);
#pragma GCC unroll 12
    for (int i = 0; i < NQ; ++i) {
      const __m512i q = _mm512_set1_epi32(Qp[g * kI8TileQ + i]);
      c0[i] = _mm512_dpbusd_epi32(c0[i], q, x0);
      c1[i] = _mm512_dpbusd_epi32(c1[i], q, x1);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < NQ; ++i) {
    _mm512_storeu_si512(out + i * ldo, c0[i]);
    _mm512_storeu_si512(out + i * ldo + 16, c1[i]);
  }
}
template <int NQ>
RAGCORE_AVX512 inline void i8_pairs(const int32_t* Qp, const int32_t* P, int np, int groups, int32_t* out, int64_t ldo) {
  const int64_t pstride = static_cast<int64_t>(groups) * 16;
  for (int p = 0; p + 2 <= np; p += 2)
    i8_tile_pair<NQ>(Qp, P + p * pstride, P + (p + 1) * pstride, groups, out + p * 16, ldo);
}
RAGCORE_AVX512 void i8_tile_avx512(const int32_t* Qp, int nq, const int32_t* P, int np, int groups, int32_t* out,
                                   int64_t ldo) {
  switch (nq) {
    case 12: i8_pairs<12>(Qp, P, np, groups, out, ldo); break;
    case 11: i8_pairs<11>(Qp, P, np, groups, out, ldo); break;
    case 10: i8_pairs<10>(Qp, P, np, groups, out, ldo); break;
    case 9: i8_pairs<9>(Qp, P, np, groups, out, ldo); break;
    case 8: i8_pairs<8>(Qp, P, np, groups, out, ldo); break;
    case 7: i8_pairs<7>(Qp, P, np, groups, out, ldo); break;
    case 6: i8_pairs<6>(Qp, P, np, groups, out, ldo); break;
    case 5: i8_pairs<5>(Qp, P, np, groups, out, ldo); break;
    case 4: i8_pairs<4>(Qp, P, np, groups, out, ldo); break;
    case 3: i8_pairs<3>(Qp, P, np, groups, out, ldo); break;
    case 2: i8_pairs<2>(Qp, P, np, groups, out, ldo); break;
    case 1: i8_pairs<1>(Qp, P, np, groups, out, ldo); break;
    default: break;
  }
}
// The lanes set in m of rows j..j+15: their positions and lower / upper bounds appended at cnt; returns
// the new count.
RAGCORE_AVX512 inline int emit_hits(__mmask16 m, int j, __m512 lower, __m512 upper, int* pos, float* lo, float* hi,
                                    int cnt) {
  alignas(64) float ua[16], la[16];
  _mm512_store_ps(ua, upper);
  _mm512_store_ps(la, lower);
  while (m) {
    const int t = __builtin_ctz(m);
    m = static_cast<__mmask16>(m & (m - 1));
    pos[cnt] = j + t;
    lo[cnt] = la[t];
    hi[cnt] = ua[t];
    ++cnt;
  }
  return cnt;
}

// The int8 bound of 16 rows (see search_blocked_i8): estimates a = scale * sq * dot and bound =
// (min(sq b1, en b2) + qn c3) (1 + 1e-5) + 1e-5 |a| + 1e-30; returns the bound, a in *a_out.
RAGCORE_AVX512 inline __m512 i8_bound16(__m512i dot, __m512 scale, __m512 b1, __m512 b2, __m512 c3, __m512 vsq,
                                        __m512 ven, __m512 vqn, __m512* a_out) {
  const __m512 a = _mm512_mul_ps(_mm512_mul_ps(scale, vsq), _mm512_cvtepi32_ps(dot));
  const __m512 qerr = _mm512_min_ps(_mm512_mul_ps(vsq, b1), _mm512_mul_ps(ven, b2));
  const __m512 core = _mm512_fmadd_ps(vqn, c3, qerr);
  *a_out = a;
  return _mm512_add_ps(_mm512_fmadd_ps(_mm512_abs_ps(a), _mm512_set1_ps(1e-5f), _mm512_mul_ps(core, _mm512_set1_ps(1.f + 1e-5f))),
                       _mm512_set1_ps(1e-30f));
}

RAGCORE_AVX512 int i8_filter_avx512(const int32_t* dot, const int32_t* rs, const float* scale, const float* b1,
                                    const float* b2, const float* c3, int n, float sq, float en, float qn, float thr,
                                    int* pos, float* lo, float* hi) {
  const __m512 vsq = _mm512_set1_ps(sq), ven = _mm512_set1_ps(en), vqn = _mm512_set1_ps(qn), vthr = _mm512_set1_ps(thr);
  int cnt = 0;
  for (int j = 0; j < n; j += 16) {
    const __mmask16 valid = n - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - j)) - 1u);
    const __m512i d = _mm512_sub_epi32(_mm512_loadu_si512(dot + j), _mm512_slli_epi32(_mm512_loadu_si512(rs + j), 7));
    __m512 a;
    const __m512 bound = i8_bound16(d, _mm512_loadu_ps(scale + j), _mm512_loadu_ps(b1 + j), _mm512_loadu_ps(b2 + j),
                                    _mm512_loadu_ps(c3 + j), vsq, ven, vqn, &a);
    const __m512 up = _mm512_add_ps(a, bound);
    const __mmask16 m = _mm512_mask_cmp_ps_mask(valid, up, vthr, _CMP_GE_OQ);
    if (m) cnt = emit_hits(m, j, _mm512_sub_ps(a, bound), up, pos, lo, hi, cnt);
  }
  return cnt;
}
RAGCORE_AVX512 int scan_filter_avx512(const int32_t* dots, const float* aux, int stride, int n, float sq, float en,
                                      float qn, float rnd, float thr, int* pos, float* lo, float* hi) {  // n % 16 == 0
  const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512 vsq = _mm512_set1_ps(sq), ven = _mm512_set1_ps(en), vqn = _mm512_set1_ps(qn), vthr = _mm512_set1_ps(thr);
  const __m512 vrnd = _mm512_set1_ps(rnd), half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.f);
  int cnt = 0;
  for (int j = 0; j < n; j += 16) {
    __m512 scale, b1, b2, c3;
    if (stride == 4) {  // 16 rows of (scale, b1, b2, b3): de-interleave in two rounds of even / odd picks
      const float* p = aux + 4 * static_cast<int64_t>(j);
      const __m512 A = _mm512_loadu_ps(p), B = _mm512_loadu_ps(p + 16), C = _mm512_loadu_ps(p + 32),
                   D = _mm512_loadu_ps(p + 48);
      const __m512 abe = _mm512_permutex2var_ps(A, ev, B), abo = _mm512_permutex2var_ps(A, od, B);
      const __m512 cde = _mm512_permutex2var_ps(C, ev, D), cdo = _mm512_permutex2var_ps(C, od, D);
      scale = _mm512_permutex2var_ps(abe, ev, cde);
      b2 = _mm512_permutex2var_ps(abe, od, cde);
      b1 = _mm512_permutex2var_ps(abo, ev, cdo);
      const __m512 b3 = _mm512_permutex2var_ps(abo, od, cdo);
      c3 = _mm512_fmadd_ps(vrnd, _mm512_add_ps(b2, b3), b3);
    } else {  // (scale, L1 of the codes): the query term only
      const float* p = aux + 2 * static_cast<int64_t>(j);
      const __m512 A = _mm512_loadu_ps(p), B = _mm512_loadu_ps(p + 16);
      scale = _mm512_permutex2var_ps(A, ev, B);
      b1 = _mm512_mul_ps(scale, _mm512_mul_ps(half, _mm512_permutex2var_ps(A, od, B)));
      b2 = one;
      c3 = _mm512_setzero_ps();
    }
    __m512 a;
    const __m512 bound = i8_bound16(_mm512_loadu_si512(dots + j), scale, b1, b2, c3, vsq, ven, vqn, &a);
    const __m512 up = _mm512_add_ps(a, bound);
    const __mmask16 m = _mm512_cmp_ps_mask(up, vthr, _CMP_GE_OQ);
    if (m) cnt = emit_hits(m, j, _mm512_sub_ps(a, bound), up, pos, lo, hi, cnt);
  }
  return cnt;
}

const I8TileKernels kI8TileAvx512 = {kI8TileQ, 1, false, nullptr, nullptr, i8_pack, i8_tile_avx512, i8_filter_avx512};

const Kernels kAvx512 = {"avx512",        scores_f32_avx2,   scores_f16_avx512, dots_i8_avx512,  dot_f32_i8_avx2,
                         pack_avx2,       kAvx512TileQ,      tile_f32_avx512,   f16_to_f32_avx2, i8_to_f32_avx2,
                         filter_ge_avx2,  nullptr,           &kI8TileAvx512,    scan_filter_avx512};

#ifdef RAGCORE_AMX_BUILD
// ----------------------------------- AMX ------------------------------------------------------
// Sapphire Rapids and later: bf16 tile products, 32 queries x 32 rows x 32 dimensions per step (four
// 16x16 float32 accumulator tiles, two query tiles, two row tiles). bf16 keeps 8 significant bits, so
// these scores only select candidates; search_blocked_amx re-scores them exactly (see there).
#define RAGCORE_AMX \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16,amx-tile,amx-bf16,amx-int8")))

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

RAGCORE_AMX void amx_begin() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  // GCC's _tile_loadconfig tells the compiler it reads only a pointer's worth of the 64 bytes, which
  // lets it drop the stores above as dead: the barrier keeps them
  __asm__ __volatile__("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}
RAGCORE_AMX void amx_end() { _tile_release(); }

// 16 floats -> 16 bf16 (round to nearest even)
RAGCORE_AMX inline __m256i to_bf16(__m512 v) { return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)); }

RAGCORE_AMX void amx_queries(const float* Q, int64_t m, int64_t m_pad, int dim, int dpad, uint16_t* out) {
  const int rem = dim % 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << rem) - 1u);
  for (int64_t i = 0; i < m_pad; ++i) {
    uint16_t* o = out + i * dpad;
    std::memset(o, 0, static_cast<size_t>(dpad) * 2);
    if (i >= m) continue;
    const float* q = Q + i * dim;
    int d = 0;
    for (; d + 16 <= dim; d += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + d), to_bf16(_mm512_loadu_ps(q + d)));
    if (rem) _mm256_mask_storeu_epi16(o + d, tail, to_bf16(_mm512_maskz_loadu_ps(tail, q + d)));
  }
}

RAGCORE_AMX void amx_pack(const float* X, int64_t nr, int dim, int dpad, uint16_t* P, float* norms, uint16_t* r16) {
  const int64_t np = ((nr + 15) / 16 + 1) / 2 * 2;
  const int nc = dpad / kAmxChunk;
  const int rem = dim % 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << rem) - 1u);
  const size_t panel = static_cast<size_t>(nc) * 512;
  // every position of every panel is written below: the row's bf16 (zero past dim: those entries of
  // r16 are zeroed once and never written), and rows past nr as zeros
  std::memset(r16, 0, static_cast<size_t>(dpad) * 2);
  for (int64_t r = 0; r < np * 16; ++r) {
    float ss_total = 0.f;
    if (r < nr) {
      const float* x = X + r * dim;
      __m512 ss = _mm512_setzero_ps();
      int d = 0;
      for (; d + 16 <= dim; d += 16) {
        const __m512 v = _mm512_loadu_ps(x + d);
        ss = _mm512_fmadd_ps(v, v, ss);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(r16 + d), to_bf16(v));
      }
      if (rem) {
        const __m512 v = _mm512_maskz_loadu_ps(tail, x + d);
        ss = _mm512_fmadd_ps(v, v, ss);
        _mm256_mask_storeu_epi16(r16 + d, tail, to_bf16(v));
      }
      ss_total = _mm512_reduce_add_ps(ss);
    } else if (r == nr) {
      std::memset(r16, 0, static_cast<size_t>(dim) * 2);
    }
    norms[r] = std::sqrt(ss_total);
    // scatter the row's dimension pairs into column j of its panel: 32-bit pair k2 of chunk c goes to
    // P[p][c][k2][j]
    const uint32_t* pairs = reinterpret_cast<const uint32_t*>(r16);
    uint32_t* dst = reinterpret_cast<uint32_t*>(P + (r / 16) * panel) + (r % 16);
    for (int c = 0; c < nc; ++c)
      for (int k2 = 0; k2 < 16; ++k2) dst[(c * 16 + k2) * 16] = pairs[c * 16 + k2];
  }
}

// Four accumulator tiles (0-3) = two 16-row A tiles (4, 5: queries, qstride bytes apart, 64 bytes per
// chunk) times two B tiles (6, 7: a pair of row panels of panel_bytes, 1024 bytes per chunk), over nc
// chunks, for each pair of panels; stores 16 x 32 4-byte results per A tile at out (ldo per row). Dp
// issues the four tile products (bf16 or int8); Prefetch loads the next chunk's tiles into L1 while this
// one multiplies (measured about 5% faster for bf16).
template <class Dp, bool Prefetch>
RAGCORE_AMX inline void amx_tile_pairs(const char* Q0, int64_t qstride, const char* P, int64_t panel_bytes, int nc,
                                       int np, char* out, int64_t ldo) {
  const char* Q1 = Q0 + 16 * qstride;
  for (int p = 0; p < np; p += 2) {
    const char* P0 = P + p * panel_bytes;
    const char* P1 = P0 + panel_bytes;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int c = 0; c < nc; ++c) {
      if (Prefetch && c + 1 < nc) {
        const char* b0 = P0 + (c + 1) * 1024;
        const char* b1 = P1 + (c + 1) * 1024;
        const char* a0 = Q0 + (c + 1) * 64;
        for (int l = 0; l < 16; ++l) {
          _mm_prefetch(b0 + 64 * l, _MM_HINT_T0);
          _mm_prefetch(b1 + 64 * l, _MM_HINT_T0);
          _mm_prefetch(a0 + qstride * l, _MM_HINT_T0);
          _mm_prefetch(a0 + qstride * (l + 16), _MM_HINT_T0);
        }
      }
      _tile_loadd(4, Q0 + c * 64, qstride);
      _tile_loadd(5, Q1 + c * 64, qstride);
      _tile_loadd(6, P0 + c * 1024, 64);
      _tile_loadd(7, P1 + c * 1024, 64);
      Dp::run();
    }
    char* o = out + p * 16 * 4;
    _tile_stored(0, o, ldo * 4);
    _tile_stored(1, o + 64, ldo * 4);
    _tile_stored(2, o + 16 * ldo * 4, ldo * 4);
    _tile_stored(3, o + 16 * ldo * 4 + 64, ldo * 4);
  }
}
struct DpBf16 {
  RAGCORE_AMX static void run() {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
};
struct DpInt8 {
  RAGCORE_AMX static void run() {
    _tile_dpbusd(0, 4, 6);
    _tile_dpbusd(1, 4, 7);
    _tile_dpbusd(2, 5, 6);
    _tile_dpbusd(3, 5, 7);
  }
};

RAGCORE_AMX void amx_scores(const uint16_t* Qb, int dpad, const uint16_t* P, int np, float* out, int64_t ldo) {
  const int nc = dpad / kAmxChunk;
  amx_tile_pairs<DpBf16, true>(reinterpret_cast<const char*>(Qb), static_cast<int64_t>(dpad) * 2,
                               reinterpret_cast<const char*>(P), static_cast<int64_t>(nc) * 1024, nc, np,
                               reinterpret_cast<char*>(out), ldo);
}

RAGCORE_AMX int amx_filter(const float* a, const float* norms, int n, float qs, float thr, int* pos) {
  // a + qs * norm >= thr - 1e-30 (the bound's float rounding is inside its relative slack)
  const __m512 vq = _mm512_set1_ps(qs), vt = _mm512_set1_ps(thr - 1e-30f);
  int cnt = 0, t = 0;
  for (; t + 16 <= n; t += 16) {
    unsigned msk = _mm512_cmp_ps_mask(_mm512_fmadd_ps(vq, _mm512_loadu_ps(norms + t), _mm512_loadu_ps(a + t)), vt,
                                      _CMP_GE_OQ);
    while (msk) {
      pos[cnt++] = t + __builtin_ctz(msk);
      msk &= msk - 1;
    }
  }
  for (; t < n; ++t) {
    pos[cnt] = t;
    cnt += a[t] + qs * norms[t] >= thr - 1e-30f;
  }
  return cnt;
}

const AmxKernels kAmxKernels = {amx_begin, amx_end, amx_pack, amx_queries, amx_scores, amx_filter};

// int8 codes on AMX: TDPBUSD (unsigned query bytes x signed codes, int32 sums), 32 queries x 32 rows x 64
// dimensions per step. The rows are i8_pack's panels, whose 16 groups of a 64-dimension chunk are a B tile
// as they stand; the queries are row-major bytes (A tiles of 16 queries x 64 bytes).
RAGCORE_AMX void amx_i8_tile(const int32_t* Qp, int, const int32_t* P, int np, int groups, int32_t* out, int64_t ldo) {
  amx_tile_pairs<DpInt8, false>(reinterpret_cast<const char*>(Qp), static_cast<int64_t>(groups) * 4,
                                reinterpret_cast<const char*>(P), static_cast<int64_t>(groups) * 64, groups / 16, np,
                                reinterpret_cast<char*>(out), ldo);
}
const I8TileKernels kI8TileAmx = {32, 16, true, amx_begin, amx_end, i8_pack, amx_i8_tile, i8_filter_avx512};
const Kernels kAmx = {"amx",           scores_f32_avx2, scores_f16_avx512, dots_i8_avx512, dot_f32_i8_avx2,
                      pack_avx2,       kAvx512TileQ,    tile_f32_avx512,   f16_to_f32_avx2, i8_to_f32_avx2,
                      filter_ge_avx2,  &kAmxKernels,   &kI8TileAmx,      scan_filter_avx512};
#endif  // RAGCORE_AMX_BUILD

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

std::atomic<const Kernels*> g_kernels{nullptr};

const Kernels& kernels() {
  const Kernels* k = g_kernels.load(std::memory_order_acquire);
  if (!k) {
    k = best_kernels();
    g_kernels.store(k, std::memory_order_release);
  }
  return *k;
}

// ---------------------------------------------------------------------------------------------
// Drivers
// ---------------------------------------------------------------------------------------------
inline bool live(const Collection& c, int64_t i) { return !c.deleted || !c.deleted[i]; }

const float* f32_rows(const Collection& c, int64_t r) {
  return static_cast<const float*>(c.data) + r * c.dim;
}
const uint16_t* f16_rows(const Collection& c, int64_t r) {
  return static_cast<const uint16_t*>(c.data) + r * c.dim;
}
const int8_t* i8_rows(const Collection& c, int64_t r) {
  return static_cast<const int8_t*>(c.data) + r * c.dim;
}

/// Scan rows [b, e) for one float query (f32 / f16), pushing into top.
void scan_float(const Kernels& K, const Collection& c, const float* q, int64_t b, int64_t e, TopK& top) {
  float buf[kScanBlock];
  int pos[kScanBlock];
  for (int64_t r = b; r < e; r += kScanBlock) {
    const int nr = static_cast<int>(std::min<int64_t>(kScanBlock, e - r));
    if (c.dtype == DType::f32)
      K.scores_f32(q, f32_rows(c, r), nr, c.dim, buf);
    else
      K.scores_f16(q, f16_rows(c, r), nr, c.dim, buf);
    const int m = K.filter_ge(buf, nr, top.threshold(), pos);
    for (int t = 0; t < m; ++t) {
      const int64_t i = r + pos[t];
      if (live(c, i)) top.push(buf[pos[t]], i);
    }
  }
}

/// Rows [r, r + nr) as float32: the stored rows themselves (f32), or converted into buf (f16; i8 times
/// the row scales), (nr, dim).
const float* rows_f32(const Kernels& K, const Collection& c, int64_t r, int64_t nr, float* buf) {
  if (c.dtype == DType::f32) return f32_rows(c, r);
  if (c.dtype == DType::f16)
    K.f16_to_f32(f16_rows(c, r), buf, nr * c.dim);
  else
    K.i8_to_f32(i8_rows(c, r), c.aux + 2 * r, nr, c.dim, buf);
  return buf;
}

/// The int8 query of a float query: qq = round(q / sq), sq = max|q| / 127.
float quantize_query(const float* q, int dim, int8_t* qq) {
  float amax = 0.f;
  for (int d = 0; d < dim; ++d) amax = std::max(amax, std::fabs(q[d]));
  const float sq = amax > 0.f ? amax / 127.f : 1.f;
  for (int d = 0; d < dim; ++d) {
    const float v = std::nearbyint(q[d] / sq);
    qq[d] = static_cast<int8_t>(std::max(-127.f, std::min(127.f, v)));
  }
  return sq;
}

/// Candidates under an error bound (the int8 scan, the AMX batches), for one query and one worker:
/// top-k of the lower bounds and the rows whose upper bound reached the running k-th lower bound (only
/// those can be in the exact top-k).
struct BoundScan {
  explicit BoundScan(int k) : lower(static_cast<size_t>(k)) {}
  TopK lower;
  std::vector<std::pair<float, int64_t>> cand;  // (upper bound, row)
  void add(float lo, float hi, int64_t row) {
    lower.push(lo, row);
    cand.emplace_back(hi, row);
  }
  /// Drop the candidates the k-th lower bound has ruled out, once there are many.
  void compact_if_large() {
    if (cand.size() <= 8192) return;
    lower.tighten();
    const float t = lower.threshold();
    size_t w = 0;
    for (const auto& x : cand)
      if (x.first >= t) cand[w++] = x;
    cand.resize(w);
  }
};

/// The exact score of query q against stored row i (int8: the float query times the row, times its scale).
float exact_score(const Kernels& K, const Collection& c, const float* q, int64_t i) {
  float v;
  if (c.dtype == DType::f32)
    K.scores_f32(q, f32_rows(c, i), 1, c.dim, &v);
  else if (c.dtype == DType::f16)
    K.scores_f16(q, f16_rows(c, i), 1, c.dim, &v);
  else
    v = c.aux[2 * i] * K.dot_f32_i8(q, i8_rows(c, i), c.dim);
  return v;
}

// For a query q with q = sq * qq + e, |e_d| <= sq / 2 (round to nearest; clipping never happens since
// |q_d| <= 127 sq), the exact score s = scale * (q . x) and the integer estimate a = scale * sq * (qq . x)
// differ by at most scale * (sq / 2) * |x|_1. The float rounding of a and of the bound is covered by
// a relative slack far above float epsilon.
struct I8Bound {  // int8 rows: aux (n, 2) = (scale, L1 of the codes)
  static constexpr int stride = 2;
  float sq;
  float en() const { return std::numeric_limits<float>::infinity(); }  // (for Kernels::scan_filter)
  float qn() const { return 0.f; }
  float rnd() const { return 0.f; }
  float operator()(const float* aux, float a) const {
    return aux[0] * sq * (0.5f * aux[1]) * (1.f + 1e-5f) + std::fabs(a) * 1e-5f + 1e-30f;
  }
};

// The prefilter of f32 / f16 rows: x = scale * c + r (c the codes, r the residual), q = sq * qq + e. Then
// q . x = scale * sq * (qq . c) + e . (scale * c) + q . r, with |e . (scale c)| <= min(sq/2 * scale |c|_1,
// |e|_2 |scale c|_2) and |q . r| <= |q|_2 |r|_2 (Cauchy-Schwarz). The stored rows' own float score
// differs from q . x by float rounding, at most ~dim/8 * 2^-24 * |q|_2 |x|_2 with 8-lane accumulation and
// dim * 2^-24 * |q|_2 |x|_2 for the scalar kernels: the 3e-5 |q| (|scale c| + |r|) term covers both for
// any dim up to ~500, and scales with dim beyond that.
struct PreBound {  // pre_aux (n, 4) = (scale, scale * L1(c) / 2, L2(scale c), L2(r))
  static constexpr int stride = 4;
  float sq, e_n, q_n, round;  // e_n = |e|_2, q_n = |q|_2 (rounded up), round = the rounding factor
  float en() const { return e_n; }
  float qn() const { return q_n; }
  float rnd() const { return round; }
  float operator()(const float* aux, float a) const {
    const float query_err = std::min(sq * aux[1], e_n * aux[2]);
    return (query_err + q_n * aux[3] + round * q_n * (aux[2] + aux[3])) * (1.f + 1e-5f) + std::fabs(a) * 1e-5f +
           1e-30f;
  }
};

/// Scan int8 codes of rows [b, e) (row r at codes + r * dim, its aux at aux + r * Bound::stride) with the
/// quantised query, keeping the candidates the bound cannot rule out.
template <class Bound>
void scan_codes(const Kernels& K, const Collection& c, const int8_t* codes, const float* aux_all, const int8_t* qq,
                float sq, const Bound& bound_of, int64_t b, int64_t e, BoundScan& st) {
  int32_t dots[kScanBlock];
  float upper[kScanBlock], lowerb[kScanBlock];
  int pos[kScanBlock];
  for (int64_t r = b; r < e; r += kScanBlock) {
    const int nr = static_cast<int>(std::min<int64_t>(kScanBlock, e - r));
    K.dots_i8(qq, codes + r * c.dim, nr, c.dim, dots);
    const float* aux = aux_all + Bound::stride * r;
    const float thr = st.lower.threshold();
    // the hits (position, lower, upper bound): vectorised for whole groups of 16 rows, then row by row
    const int vec = K.scan_filter ? nr / 16 * 16 : 0;
    int m = vec ? K.scan_filter(dots, aux, Bound::stride, vec, sq, bound_of.en(), bound_of.qn(), bound_of.rnd(), thr,
                                pos, lowerb, upper)
                : 0;
    for (int t = vec; t < nr; ++t) {
      const float* at = aux + Bound::stride * t;
      const float a = at[0] * sq * static_cast<float>(dots[t]);
      const float bound = bound_of(at, a);
      if (a + bound < thr) continue;
      pos[m] = t;
      lowerb[m] = a - bound;
      upper[m++] = a + bound;
    }
    for (int t = 0; t < m; ++t) {
      const int64_t i = r + pos[t];
      if (live(c, i)) st.add(lowerb[t], upper[t], i);
    }
    st.compact_if_large();
  }
}

/// One query's exact top-k from its candidates: the rows whose upper bound reaches the final k-th best
/// lower bound (only those can be in the exact top-k), scored exactly from the stored rows.
void rescore(const Kernels& K, const Collection& c, const float* q, BoundScan& s, int k, int64_t* out_idx,
             float* out_scores) {
  s.lower.tighten();
  const float t = s.lower.threshold();
  TopK top(static_cast<size_t>(k));
  for (const auto& x : s.cand)
    if (x.first >= t) top.push(exact_score(K, c, q, x.second), x.second);
  top.write(out_idx, out_scores);
}

void search_scan(const Kernels& K, const Collection& c, const float* queries, int64_t nq, int k, int threads,
                 int64_t* out_idx, float* out_scores) {
  const int dim = c.dim;
  const int64_t n_chunks = (c.n + kScanChunk - 1) / kScanChunk;
  const int workers = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n_chunks)));
  std::vector<int8_t> qq(static_cast<size_t>(dim));
  for (int64_t qi = 0; qi < nq; ++qi) {
    const float* q = queries + qi * dim;
    TopK final_top(static_cast<size_t>(k));
    if (c.dtype == DType::i8 || c.pre) {
      const float sq = quantize_query(q, dim, qq.data());
      std::vector<BoundScan> st;
      for (int w = 0; w < workers; ++w) st.emplace_back(k);
      if (c.pre) {
        double qn2 = 0, en2 = 0;
        for (int d = 0; d < dim; ++d) {
          const double err = static_cast<double>(q[d]) - static_cast<double>(sq) * qq[d];
          qn2 += static_cast<double>(q[d]) * q[d];
          en2 += err * err;
        }
        const PreBound pb{sq, static_cast<float>(std::sqrt(en2) * (1 + 1e-6)),
                          static_cast<float>(std::sqrt(qn2) * (1 + 1e-6)),
                          3e-5f * std::max(1.f, static_cast<float>(dim) / 500.f)};
        parallel_for(static_cast<size_t>(c.n), workers, static_cast<size_t>(kScanChunk),
                     [&](int w, size_t b, size_t e) { scan_codes(K, c, c.pre, c.pre_aux, qq.data(), sq, pb, b, e, st[w]); });
      } else {
        const I8Bound ib{sq};
        parallel_for(static_cast<size_t>(c.n), workers, static_cast<size_t>(kScanChunk), [&](int w, size_t b, size_t e) {
          scan_codes(K, c, i8_rows(c, 0), c.aux, qq.data(), sq, ib, b, e, st[w]);
        });
      }
      TopK lower(static_cast<size_t>(k));  // the k-th best lower bound over all workers
      for (auto& s : st) s.lower.for_each([&](float v, int64_t i) { lower.push(v, i); });
      lower.tighten();
      const float t = lower.threshold();
      for (auto& s : st)
        for (const auto& x : s.cand)
          if (x.first >= t) {
            const int64_t i = x.second;
            final_top.push(exact_score(K, c, q, i), i);
          }
    } else if (workers <= 1) {
      scan_float(K, c, q, 0, c.n, final_top);
    } else {
      std::vector<TopK> tops(static_cast<size_t>(workers), TopK(static_cast<size_t>(k)));
      parallel_for(static_cast<size_t>(c.n), workers, static_cast<size_t>(kScanChunk),
                   [&](int w, size_t b, size_t e) { scan_float(K, c, q, b, e, tops[w]); });
      for (auto& t : tops) t.for_each([&](float v, int64_t i) { final_top.push(v, i); });
    }
    final_top.write(out_idx + qi * k, out_scores + qi * k);
  }
}

void search_blocked(const Kernels& K, const Collection& c, const float* queries, int64_t nq, int k, int threads,
                    int64_t* out_idx, float* out_scores) {
  const int dim = c.dim;
  // Queries per task: all of them split evenly over the threads (a multiple of the tile), so each
  // block of rows is converted and packed once per thread.
  const int tq = K.tile_q;
  int64_t qb = (nq + threads - 1) / std::max(threads, 1);
  qb = (qb + tq - 1) / tq * tq;
  parallel_for(static_cast<size_t>(nq), threads, static_cast<size_t>(qb), [&](int, size_t qb0, size_t qe0) {
    const int64_t q0 = static_cast<int64_t>(qb0), q1 = static_cast<int64_t>(qe0), m = q1 - q0;
    std::vector<TopK> tops(static_cast<size_t>(m), TopK(static_cast<size_t>(k)));
    std::vector<float> scores(static_cast<size_t>(tq * kRowBlock));
    std::vector<float> rows;  // f16 / i8 rows of the block as float32
    if (c.dtype != DType::f32) rows.resize(static_cast<size_t>(kRowBlock * dim));
    std::vector<float> packed(static_cast<size_t>(kRowBlock * dim));
    std::vector<int> pos(static_cast<size_t>(kRowBlock));
    // the task's queries, tile by tile, dimension-major inside a tile: Qp[t][d][i] = Q[t * tq + i][d]
    const int64_t ntiles = (m + tq - 1) / tq;
    std::vector<float> qpacked(static_cast<size_t>(ntiles * dim * tq), 0.f);
    for (int64_t i = 0; i < m; ++i) {
      float* o = qpacked.data() + (i / tq) * dim * tq + i % tq;
      const float* q = queries + (q0 + i) * dim;
      for (int d = 0; d < dim; ++d) o[static_cast<int64_t>(d) * tq] = q[d];
    }
    for (int64_t r = 0; r < c.n; r += kRowBlock) {
      const int64_t nr = std::min<int64_t>(kRowBlock, c.n - r);
      const float* X = rows_f32(K, c, r, nr, rows.data());
      K.pack(X, nr, dim, packed.data());
      const int np = static_cast<int>((nr + kPanel - 1) / kPanel);
      for (int64_t i = 0; i < m; i += tq) {
        const int nt = static_cast<int>(std::min<int64_t>(tq, m - i));
        K.tile_f32(qpacked.data() + (i / tq) * dim * tq, nt, packed.data(), np, dim, scores.data(), kRowBlock);
        for (int t = 0; t < nt; ++t) {
          TopK& top = tops[static_cast<size_t>(i + t)];
          const float* s = scores.data() + static_cast<int64_t>(t) * kRowBlock;
          const int cnt = K.filter_ge(s, static_cast<int>(nr), top.threshold(), pos.data());
          for (int u = 0; u < cnt; ++u) {
            const int64_t row = r + pos[static_cast<size_t>(u)];
            if (live(c, row)) top.push(s[pos[static_cast<size_t>(u)]], row);
          }
        }
      }
    }
    for (int64_t i = 0; i < m; ++i) tops[static_cast<size_t>(i)].write(out_idx + (q0 + i) * k, out_scores + (q0 + i) * k);
  });
}

/// Batches on AMX: bf16 tile products select candidates, float32 re-scoring decides. For a query q and
/// a row x, the tile unit's score a = sum_d bf16(q_d) bf16(x_d), accumulated in float32, differs from
/// the exact s = q . x by at most
///     |a - s| <= |q| |x| ((2u + u^2) + (dim + 2) 2^-24 (1 + u)^2),   u = 2^-8 (bf16 rounding),
/// (each product is off by at most (2u + u^2) |q_d x_d|, their sum is at most |q| |x| by Cauchy-Schwarz,
/// and float32 accumulation adds at most (dim + 2) 2^-24 times the sum of the products' magnitudes),
/// plus float rounding of a +- bound: 1e-6 |q| |x| more (|a| <= |q| |x| (1 + u)^2 (1 + dim 2^-24), so this
/// exceeds 2^-23 |a| with room to spare), all times 1.001. As in the int8 scan, each query
/// keeps the top-k of lower bounds a - b and every row whose upper bound a + b reached the running k-th
/// lower bound; at the end the rows whose upper bound reaches the final k-th lower bound (only those can
/// be in the exact top-k) are scored exactly with the stored values.
void search_blocked_amx(const Kernels& K, const Collection& c, const float* queries, int64_t nq, int k,
                        int threads, int64_t* out_idx, float* out_scores) {
  const AmxKernels& A = *K.amx;
  const int dim = c.dim;
  const int dpad = (dim + kAmxChunk - 1) / kAmxChunk * kAmxChunk;
  constexpr double u = 1.0 / 256;
  const float rel =
      static_cast<float>(((2 * u + u * u) + (dim + 2) * std::ldexp(1.0, -24) * (1 + u) * (1 + u) + 1e-6) * 1.001);
  int64_t qb = (nq + threads - 1) / std::max(threads, 1);
  qb = (qb + kAmxGroupQ - 1) / kAmxGroupQ * kAmxGroupQ;
  parallel_for(static_cast<size_t>(nq), threads, static_cast<size_t>(qb), [&](int, size_t qb0, size_t qe0) {
    const int64_t q0 = static_cast<int64_t>(qb0), m = static_cast<int64_t>(qe0) - q0;
    const int64_t m_pad = (m + kAmxGroupQ - 1) / kAmxGroupQ * kAmxGroupQ;
    const float* Q = queries + q0 * dim;
    std::vector<uint16_t> qbf(static_cast<size_t>(m_pad * dpad));
    A.queries(Q, m, m_pad, dim, dpad, qbf.data());
    std::vector<float> qscale(static_cast<size_t>(m));  // rel * |q|
    for (int64_t i = 0; i < m; ++i) {
      double ss = 0;
      for (int d = 0; d < dim; ++d) ss += static_cast<double>(Q[i * dim + d]) * Q[i * dim + d];
      qscale[static_cast<size_t>(i)] = rel * static_cast<float>(std::sqrt(ss));
    }
    std::vector<BoundScan> st;
    st.reserve(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) st.emplace_back(k);
    const int64_t np_max = ((kRowBlock + 15) / 16 + 1) / 2 * 2;
    std::vector<uint16_t> packed(static_cast<size_t>(np_max * (dpad / kAmxChunk) * 512));
    std::vector<float> norms(static_cast<size_t>(np_max * 16));
    std::vector<uint16_t> scratch(static_cast<size_t>(dpad));
    std::vector<float> rows;
    if (c.dtype != DType::f32) rows.resize(static_cast<size_t>(kRowBlock * dim));
    std::vector<float> scores(static_cast<size_t>(kAmxGroupQ * np_max * 16));
    std::vector<int> pos(static_cast<size_t>(kRowBlock));
    const int64_t ldo = np_max * 16;
    struct TileGuard {  // the tiles are this thread's until released, also on an exception
      const AmxKernels& a;
      explicit TileGuard(const AmxKernels& x) : a(x) { a.begin(); }
      ~TileGuard() { a.end(); }
    } guard(A);
    for (int64_t r = 0; r < c.n; r += kRowBlock) {
      const int64_t nr = std::min<int64_t>(kRowBlock, c.n - r);
      const float* X = rows_f32(K, c, r, nr, rows.data());
      A.pack(X, nr, dim, dpad, packed.data(), norms.data(), scratch.data());
      const int np = static_cast<int>(((nr + 15) / 16 + 1) / 2 * 2);
      for (int64_t g = 0; g < m; g += kAmxGroupQ) {
        A.scores(qbf.data() + g * dpad, dpad, packed.data(), np, scores.data(), ldo);
        const int64_t ng = std::min<int64_t>(kAmxGroupQ, m - g);
        for (int64_t i = 0; i < ng; ++i) {
          BoundScan& s = st[static_cast<size_t>(g + i)];
          const float qs = qscale[static_cast<size_t>(g + i)];
          const float* row = scores.data() + i * ldo;
          const int cnt = A.filter(row, norms.data(), static_cast<int>(nr), qs, s.lower.threshold(), pos.data());
          for (int u = 0; u < cnt; ++u) {
            const int t = pos[static_cast<size_t>(u)];
            if (!live(c, r + t)) continue;
            const float a = row[t], bound = amx_bound(norms[static_cast<size_t>(t)], qs);
            s.add(a - bound, a + bound, r + t);
          }
          s.compact_if_large();
        }
      }
    }
    // exact scores of the surviving candidates
    for (int64_t i = 0; i < m; ++i)
      rescore(K, c, Q + i * dim, st[static_cast<size_t>(i)], k, out_idx + (q0 + i) * k, out_scores + (q0 + i) * k);
  });
}

/// With AMX, a prefiltered collection's batches take the int8 tiles for k up to this and the bf16 tiles
/// over its float rows beyond it: the int8 bound is about twice the bf16 one, so the candidates to
/// re-score grow faster with k (100k x 384, 1000 queries, one thread: int8 1.37x bf16 at k=10, 1.14x at
/// k=32, 0.92x at k=50, 0.85x at k=100).
constexpr int kAmxPrefilterMaxK = 40;

/// Batches of int8 codes (an int8 collection's rows, or the int8 prefilter of float rows) by vpdpbusd
/// tiles: each query is quantised to int8 (as in the scan), the integer dot products give the estimates,
/// the scan's bounds (I8Bound, PreBound; here in one form) keep every row that could still reach the
/// top-k, and those are re-scored exactly from the stored rows, as in search_blocked_amx.
void search_blocked_i8(const Kernels& K, const Collection& c, const float* queries, int64_t nq, int k, int threads,
                       int64_t* out_idx, float* out_scores) {
  const I8TileKernels& T = *K.i8tile;
  const int dim = c.dim;
  const int tq = T.tile_q;
  const int groups = ((dim + 3) / 4 + T.group_align - 1) / T.group_align * T.group_align;
  const bool pre = c.pre != nullptr;
  const int8_t* codes = pre ? c.pre : static_cast<const int8_t*>(c.data);
  const float rnd = 3e-5f * std::max(1.f, static_cast<float>(dim) / 500.f);
  int64_t qb = (nq + threads - 1) / std::max(threads, 1);
  qb = (qb + tq - 1) / tq * tq;
  parallel_for(static_cast<size_t>(nq), threads, static_cast<size_t>(qb), [&](int, size_t qb0, size_t qe0) {
    const int64_t q0 = static_cast<int64_t>(qb0), m = static_cast<int64_t>(qe0) - q0;
    const float* Q = queries + q0 * dim;
    const int64_t ntiles = (m + tq - 1) / tq;
    // the queries: int8 codes + 128 packed per tile (interleaved, or row-major for AMX), and each one's
    // bound terms
    std::vector<int32_t> qp(static_cast<size_t>(ntiles * groups * tq), 0);
    std::vector<float> sq(static_cast<size_t>(m)), en(static_cast<size_t>(m)), qn(static_cast<size_t>(m));
    std::vector<int8_t> qq(static_cast<size_t>(groups) * 4, 0);  // zero past dim: those bytes are 128
    for (int64_t i = 0; i < m; ++i) {
      const float* q = Q + i * dim;
      const float s = quantize_query(q, dim, qq.data());
      double qn2 = 0, en2 = 0;
      for (int d = 0; d < dim; ++d) {
        const double err = static_cast<double>(q[d]) - static_cast<double>(s) * qq[static_cast<size_t>(d)];
        qn2 += static_cast<double>(q[d]) * q[d];
        en2 += err * err;
      }
      sq[static_cast<size_t>(i)] = s;
      // int8 rows: the scan's I8Bound (no row residual; the query term by L1 only, via en = inf)
      en[static_cast<size_t>(i)] = pre ? static_cast<float>(std::sqrt(en2) * (1 + 1e-6)) : std::numeric_limits<float>::infinity();
      qn[static_cast<size_t>(i)] = static_cast<float>(std::sqrt(qn2) * (1 + 1e-6));
      for (int g = 0; g < groups; ++g) {
        uint8_t b[4];
        for (int t = 0; t < 4; ++t) b[t] = static_cast<uint8_t>(qq[static_cast<size_t>(4 * g + t)] + 128);
        int32_t w;
        std::memcpy(&w, b, 4);
        if (T.row_major_queries)
          qp[static_cast<size_t>(i * groups + g)] = w;
        else
          qp[static_cast<size_t>((i / tq) * groups * tq + g * tq + i % tq)] = w;
      }
    }
    std::vector<BoundScan> st;
    st.reserve(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) st.emplace_back(k);
    const int64_t np_max = ((kRowBlock + 15) / 16 + 1) / 2 * 2, ldo = np_max * 16;
    std::vector<int32_t> packed(static_cast<size_t>(np_max * groups * 16)), rs(static_cast<size_t>(ldo));
    std::vector<int32_t> dots(static_cast<size_t>(tq * ldo));
    struct Guard {  // AMX: the tiles are this thread's until released, also on an exception
      const I8TileKernels& t;
      explicit Guard(const I8TileKernels& x) : t(x) { if (t.begin) t.begin(); }
      ~Guard() { if (t.end) t.end(); }
    } guard(T);
    // per row of the block: scale and the bound's coefficients (see PreBound)
    std::vector<float> scale(static_cast<size_t>(ldo)), b1(static_cast<size_t>(ldo)), b2(static_cast<size_t>(ldo)),
        c3(static_cast<size_t>(ldo)), lo(static_cast<size_t>(ldo)), hi(static_cast<size_t>(ldo));
    std::vector<int> pos(static_cast<size_t>(ldo));
    for (int64_t r = 0; r < c.n; r += kRowBlock) {
      const int64_t nr = std::min<int64_t>(kRowBlock, c.n - r);
      T.pack(codes + r * dim, nr, dim, groups, packed.data(), rs.data());
      for (int64_t j = 0; j < nr; ++j) {
        const size_t u = static_cast<size_t>(j);
        if (pre) {
          const float* a = c.pre_aux + 4 * (r + j);
          scale[u] = a[0], b1[u] = a[1], b2[u] = a[2], c3[u] = a[3] + rnd * (a[2] + a[3]);
        } else {
          const float* a = c.aux + 2 * (r + j);
          scale[u] = a[0], b1[u] = a[0] * (0.5f * a[1]), b2[u] = 1.f, c3[u] = 0.f;
        }
      }
      const int np = static_cast<int>(((nr + 15) / 16 + 1) / 2 * 2);
      for (int64_t i0 = 0; i0 < m; i0 += tq) {
        const int nt = static_cast<int>(std::min<int64_t>(tq, m - i0));
        T.tile(qp.data() + (i0 / tq) * groups * tq, nt, packed.data(), np, groups, dots.data(), ldo);
        for (int t = 0; t < nt; ++t) {
          const size_t qi = static_cast<size_t>(i0 + t);
          BoundScan& bs = st[qi];
          const float s = sq[qi], e = en[qi], n2 = qn[qi];
          const int cnt = T.filter(dots.data() + t * ldo, rs.data(), scale.data(), b1.data(), b2.data(), c3.data(),
                                   static_cast<int>(nr), s, e, n2, bs.lower.threshold(), pos.data(), lo.data(), hi.data());
          for (int u = 0; u < cnt; ++u) {
            const int64_t row = r + pos[static_cast<size_t>(u)];
            if (hi[static_cast<size_t>(u)] >= bs.lower.threshold() && live(c, row))
              bs.add(lo[static_cast<size_t>(u)], hi[static_cast<size_t>(u)], row);
          }
          bs.compact_if_large();
        }
      }
    }
    for (int64_t i = 0; i < m; ++i)
      rescore(K, c, Q + i * dim, st[static_cast<size_t>(i)], k, out_idx + (q0 + i) * k, out_scores + (q0 + i) * k);
  });
}

}  // namespace

void search_path(const Collection& c, const float* queries, int64_t nq, int k, int threads, int path,
                 int64_t* out_idx, float* out_scores) {
  RAGCORE_CHECK(k >= 1, "k must be >= 1, got " << k);
  RAGCORE_CHECK(c.dim >= 1, "dim must be >= 1, got " << c.dim);
  RAGCORE_CHECK(c.dtype != DType::i8 || c.aux != nullptr || c.n == 0, "int8 collection without scales");
  RAGCORE_CHECK(!c.pre || (c.pre_aux != nullptr && c.dtype != DType::i8), "an int8 prefilter needs its (n, 4) "
                "aux and float32 or float16 rows");
  if (nq <= 0) return;
  threads = std::max(threads, 1);
  const Kernels& K = kernels();
  if (path == 0) path = nq < kBlockedMinQueries ? 1 : 2;
  if (path == 1)
    search_scan(K, c, queries, nq, k, threads, out_idx, out_scores);
  else if (K.i8tile && (c.dtype == DType::i8 || (c.pre && (!K.amx || k <= kAmxPrefilterMaxK))) && c.n > 0)
    search_blocked_i8(K, c, queries, nq, k, threads, out_idx, out_scores);
  else if (K.amx && c.n > 0)
    search_blocked_amx(K, c, queries, nq, k, threads, out_idx, out_scores);
  else
    search_blocked(K, c, queries, nq, k, threads, out_idx, out_scores);
}

void search(const Collection& c, const float* queries, int64_t nq, int k, int threads, int64_t* out_idx,
            float* out_scores) {
  search_path(c, queries, nq, k, threads, 0, out_idx, out_scores);
}

void prefilter_codes(const float* x, int64_t n, int dim, int threads, int8_t* codes, float* aux) {
  parallel_for(static_cast<size_t>(std::max<int64_t>(n, 0)), std::max(threads, 1), 2048, [&](int, size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      const float* r = x + i * static_cast<size_t>(dim);
      int8_t* c = codes + i * static_cast<size_t>(dim);
      float amax = 0.f;
      for (int d = 0; d < dim; ++d) amax = std::max(amax, std::fabs(r[d]));
      const float scale = amax > 0.f ? amax / 127.f : 1.f;
      double l1 = 0, hat2 = 0, res2 = 0;
      for (int d = 0; d < dim; ++d) {
        const float v = std::max(-127.f, std::min(127.f, std::nearbyint(r[d] / scale)));
        c[d] = static_cast<int8_t>(v);
        const double h = static_cast<double>(v) * scale, rr = static_cast<double>(r[d]) - h;
        l1 += std::fabs(v);
        hat2 += h * h;
        res2 += rr * rr;
      }
      constexpr double up = 1.0 + 1e-6;  // rounds the float32 results up past any rounding of their own
      float* a = aux + 4 * i;
      a[0] = scale;
      a[1] = static_cast<float>(static_cast<double>(scale) * l1 * 0.5 * up);
      a[2] = static_cast<float>(std::sqrt(hat2) * up);
      a[3] = static_cast<float>(std::sqrt(res2) * up);
    }
  });
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

std::string isa() { return kernels().name; }

std::vector<std::string> isas() {
  std::vector<std::string> out;
  if (cpu_has_amx()) out.emplace_back("amx");
  if (cpu_has_avx512()) out.emplace_back("avx512");
  if (cpu_has_avx2()) out.emplace_back("avx2");
  out.emplace_back("scalar");
  return out;
}

void set_isa(const std::string& name) {
  if (name == "auto") {
    g_kernels.store(best_kernels());
    return;
  }
  if (name == "scalar") {
    g_kernels.store(&kScalar);
    return;
  }
#ifdef RAGCORE_X86
  if (name == "avx2") {
    RAGCORE_CHECK(cpu_has_avx2(), "this CPU lacks AVX2/FMA/F16C");
    g_kernels.store(&kAvx2);
    return;
  }
  if (name == "avx512") {
    RAGCORE_CHECK(cpu_has_avx512(), "this CPU lacks AVX-512 F/BW/VL/DQ/VNNI");
    g_kernels.store(&kAvx512);
    return;
  }
  if (name == "amx") {
#ifdef RAGCORE_AMX_BUILD
    RAGCORE_CHECK(cpu_has_amx(), "this CPU (or its operating system) does not offer AMX-BF16 with AVX-512 BF16");
    g_kernels.store(&kAmx);
    return;
#else
    RAGCORE_CHECK(false, "this ragcore was built without the AMX kernels (its compiler predates them)");
#endif
  }
#else
  RAGCORE_CHECK(name != "avx2" && name != "avx512" && name != "amx", "x86 kernels are not built for this architecture");
#endif
  RAGCORE_CHECK(false, "unknown instruction set '" << name << "', expected 'auto', 'amx', 'avx512', 'avx2' or 'scalar'");
}

}  // namespace ragcore::dense
