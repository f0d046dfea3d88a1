// Dense top-k search over a collection of vectors (inner product; cosine = inner product of rows
// normalised at add time). The collection is owned by the caller (numpy arrays, possibly mapped
// from disk); these functions only read it and write into outputs the caller allocated.
//
// Storage types:
//   f32  float32 rows;
//   f16  IEEE half rows (uint16 bits), scored as float(q) . float(x) in float32;
//   i8   int8 rows with one scale per row (x ~= scale * q, q in [-127, 127], symmetric) and the row's
//        L1 norm in quantised units. Scores are scale * (q_float . x_int8) in float32: exact with
//        respect to what is stored. The few-query path scans with the query quantised to int8 too
//        (integer dot products, 4x fewer bytes than float32) and keeps every row whose score could
//        still reach the top-k under a proven error bound, then re-scores those rows exactly.
//   f32 / f16 with an int8 prefilter (Collection::pre): one query scans int8 codes of the rows the same
//        way and re-scores the candidates from the f32 / f16 rows; the bound also covers the rows'
//        quantisation residual, so results equal a scan of the stored rows.
//
// Two paths: few queries (< kBlockedMinQueries) scan the rows once per query, scoring a small block
// into L1 and selecting against the running threshold (rows split over threads); more queries go
// through a blocked matrix-product kernel (register tiles of 12 queries x 32 rows with AVX-512, 6 x 16
// with AVX2) over L2-sized blocks of rows, with selection per block, so the full score matrix never
// exists. With AMX, the blocked path scores 32 queries x 32 rows per bf16 tile group, keeps the rows
// that a proven bound on the bf16 error cannot rule out, and re-scores those exactly. Batches of int8
// codes (i8 rows, or the prefilter of f32 / f16 rows) take integer tiles instead, with the scan's bounds
// and exact re-scoring: AMX-INT8 (TDPBUSD, 32 queries x 32 rows) or AVX-512 VNNI (vpdpbusd, 12 x 32);
// with AMX, a prefilter's batches use them for k <= 40 only (beyond, the bf16 tiles' tighter bound
// re-scores fewer candidates).
#pragma once
#include <cstdint>
#include <string>

namespace ragcore::dense {

enum class DType : int { f32 = 0, f16 = 1, i8 = 2 };

/// A read-only view of a collection.
struct Collection {
  DType dtype = DType::f32;
  const void* data = nullptr;     // (n, dim) row-major in `dtype`
  int64_t n = 0;
  int dim = 0;
  const float* aux = nullptr;     // i8 only: (n, 2) = (scale, L1 norm of the int8 row)
  const uint8_t* deleted = nullptr;  // (n,) 1 = tombstoned, or null
  // Optional int8 prefilter of f32 / f16 rows (few-query path only): codes (n, dim) of the stored rows
  // quantised per row (row ~= scale * code), and pre_aux (n, 4) = (scale, scale * L1(code) / 2,
  // L2(scale * code), L2(row - scale * code)) with the norms rounded up. One query scans the codes
  // (a quarter of float32's bytes) and re-scores exactly, from the stored rows, every row whose score
  // could still reach the top-k under a proven bound: the results are those of the stored rows.
  const int8_t* pre = nullptr;
  const float* pre_aux = nullptr;
};

/// Queries with fewer rows than this take the scan path; more take the blocked path.
constexpr int64_t kBlockedMinQueries = 4;

/// Top-k by inner product for `nq` float32 queries (nq, dim) row-major. Writes (nq, k) indices
/// (-1 padding) and scores (-inf padding), best first, ties to the lower index.
void search(const Collection& c, const float* queries, int64_t nq, int k, int threads, int64_t* out_indices,
            float* out_scores);

/// The int8 prefilter of `n` float32 rows (n, dim): codes (n, dim) and aux (n, 4) as Collection::pre and
/// pre_aux describe them (per-row scale max|x| / 127, codes rounded half to even; norms in double,
/// rounded up by a relative 1e-6).
void prefilter_codes(const float* x, int64_t n, int dim, int threads, int8_t* codes, float* aux);

/// Bounds of the values of loaded rows: |x| <= max_abs for float32 rows and for int8 rows' scale * 127;
/// `max_abs_f16` is the same bound as the bit pattern of a float16 (rounded down).
struct RowBound {
  float max_abs = 3.4028235e38f;
  uint16_t max_abs_f16 = 0x7BFF;  // 65504
};

/// Check a collection loaded from disk: float32 / float16 rows finite (add() refuses NaN and
/// infinities) with every |value| within `bound` (a cosine row's components are at most 1; an inner
/// product row's are bounded so that products cannot overflow float32), int8 rows' codes in
/// [-127, 127] with aux (scale, L1) = (a finite value > 0 within the bound / 127, the sum of the row's
/// |codes|), a prefilter's aux finite, >= 0, with a scale > 0. Raises value_error
/// "corrupt index: <array> row <r> ..." naming the first bad row. Rows split over `threads` threads.
/// (Not checked: that a prefilter's codes and residual norm match the rows; `verify` checksums them.)
void validate_collection(const Collection& c, int threads, RowBound bound = {});

/// The instruction set the kernels use: "amx" (the AVX-512 kernels, batches on AMX bf16 tiles with
/// exact re-scoring), "avx512" (F/BW/VL/DQ + VNNI), "avx2" (+ FMA, F16C) or "scalar": the best this CPU
/// (and OS) runs. (Tests and benchmarks list and override the choice through csrc/src/dense_testing.hpp.)
std::string isa();

}  // namespace ragcore::dense
