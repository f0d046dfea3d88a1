// Dense kernels for AVX2 + FMA + F16C (Haswell, Zen and later), chosen at run time. Every function
// here carries RAGCORE_AVX2; the helpers are static to this file and the kernels are leaf functions on
// raw pointers with no std templates inside (see dense_kernels.hpp: no AVX2 code in shared functions).
#include "dense_kernels.hpp"

#ifdef RAGCORE_X86
#include <immintrin.h>

namespace ragcore::dense::detail {

RAGCORE_AVX2 static inline __m256i tail_mask(int rem) {  // first rem lanes set, 0 < rem < 8
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), idx);
}
RAGCORE_AVX2 static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
RAGCORE_AVX2 static inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// NR rows against one float query: acc[j] over the dimensions, the tail by masked loads.
// Eight floats of row data: from float, or from half by F16C.
RAGCORE_AVX2 static inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
RAGCORE_AVX2 static inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
RAGCORE_AVX2 static inline __m256 load_tail(const float* p, int rem) { return _mm256_maskload_ps(p, tail_mask(rem)); }
RAGCORE_AVX2 static inline __m256 load_tail(const uint16_t* p, int rem) {  // no 16-bit masked load in AVX2
  alignas(16) uint16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(t, p, static_cast<size_t>(rem) * 2);
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
}

// One float query against rows of T (float or half), one row after the other with four
// accumulators: a single sequential stream, which the hardware prefetcher follows at full read
// bandwidth (walking 8 rows side by side reached only ~60-80% of it here).
template <class T>
RAGCORE_AVX2 static void scores_avx2(const float* q, const T* X, int64_t nr, int dim, float* out) {
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
RAGCORE_AVX2 static inline void transpose8(const float* src, int64_t ld, float* dst, int64_t ldd) {
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
RAGCORE_AVX2 static inline void panel_tile(const float* Qp, const float* P, int dim, float* out, int64_t ldo) {
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
RAGCORE_AVX2 static inline void panels(const float* Qp, const float* P, int np, int dim, float* out, int64_t ldo) {
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

}  // namespace ragcore::dense::detail
#endif  // RAGCORE_X86
