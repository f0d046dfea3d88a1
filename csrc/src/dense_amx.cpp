// Dense kernels for AMX (Sapphire Rapids and later), chosen at run time: the AVX-512 set with batches on
// tiles. Built with GCC >= 11 or clang >= 12 unless RAGCORE_NO_AMX (see dense_kernels.hpp). Every
// function here carries RAGCORE_AMX and sits in this file's unnamed namespace (only the table kAmx is
// seen outside); no std templates inside (see dense_kernels.hpp: no AVX-512 / AMX code in shared
// functions).
#include "dense_kernels.hpp"

#ifdef RAGCORE_AMX_BUILD
#include <immintrin.h>

#include <cmath>

namespace ragcore::dense::detail {
namespace {

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

}  // namespace

const Kernels kAmx = {"amx",           scores_f32_avx2, scores_f16_avx512, dots_i8_avx512, dot_f32_i8_avx2,
                      pack_avx2,       kAvx512TileQ,    tile_f32_avx512,   f16_to_f32_avx2, i8_to_f32_avx2,
                      filter_ge_avx2,  &kAmxKernels,   &kI8TileAmx,      scan_filter_avx512};

}  // namespace ragcore::dense::detail
#endif  // RAGCORE_AMX_BUILD
