// Shared by the .cu files of the CUDA dense store: the CUDA check macro, the order-preserving score
// keys, storage-type conversions and the host-side launchers of the kernels (each .cu file keeps
// its kernels to itself and exports plain launch functions, so no relocatable device code).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <sstream>

#include "ragcore/cuda_dense.hpp"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "ragcore's CUDA kernels need compute capability >= 8.0 (cp.async, bfloat16 tensor cores): set CMAKE_CUDA_ARCHITECTURES to 80 or higher"
#endif

/// Turn a failed CUDA runtime call into a ragcore::cuda::cuda_error carrying cudaGetErrorString.
/// The (non-sticky) error state is cleared so that the next call starts clean.
#define RAGCORE_CUDA_CHECK(expr)                                                                     \
  do {                                                                                             \
    const cudaError_t ragcore_err_ = (expr);                                                       \
    if (ragcore_err_ != cudaSuccess) {                                                             \
      (void)cudaGetLastError();                                                                    \
      std::ostringstream ragcore_os_;                                                              \
      ragcore_os_ << "CUDA error " << static_cast<int>(ragcore_err_) << " ("                       \
                  << cudaGetErrorName(ragcore_err_) << "): " << cudaGetErrorString(ragcore_err_)   \
                  << " in " #expr " at " << __FILE__ << ":" << __LINE__;                           \
      throw ::ragcore::cuda::cuda_error(ragcore_os_.str());                                        \
    }                                                                                              \
  } while (0)

namespace ragcore::cuda::detail {

// ------------------------------------------------------------------------------- score keys
// A score becomes a uint32 whose unsigned order is the score order: key 0 is reserved for "no
// row" (tombstone, padding), NaN maps to 1 (below -inf, like numpy's sort), -0.0 to +0.0.
__host__ __device__ __forceinline__ uint32_t key_of_bits(uint32_t u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return 1u;  // NaN
  if (u == 0x80000000u) u = 0u;                     // -0.0 -> +0.0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ uint32_t key_of(float f) { return key_of_bits(__float_as_uint(f)); }

__device__ __forceinline__ float score_of_key(uint32_t key) {
  if (key == 1u) return __uint_as_float(0x7fc00000u);  // NaN
  const uint32_t u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  return __uint_as_float(u);
}

// A select item: key in the high word, the bitwise NOT of the row id in the low word, so that the
// unsigned order of items is (score desc, row id asc) and every item is unique. 0 = empty.
__device__ __forceinline__ uint64_t make_item(uint32_t key, uint32_t row) {
  return (static_cast<uint64_t>(key) << 32) | static_cast<uint32_t>(~row);
}

// ------------------------------------------------------------------------- storage types
template <class T>
struct Storage;
template <>
struct Storage<float> {
  __device__ static float to(float x) { return x; }
  __device__ static float from(float x) { return x; }
};
template <>
struct Storage<__half> {
  __device__ static __half to(float x) { return __float2half_rn(x); }
  __device__ static float from(__half x) { return __half2float(x); }
};
template <>
struct Storage<__nv_bfloat16> {
  __device__ static __nv_bfloat16 to(float x) { return __float2bfloat16_rn(x); }
  __device__ static float from(__nv_bfloat16 x) { return __bfloat162float(x); }
};

inline size_t element_size(StorageType t) { return t == StorageType::float32 ? 4 : 2; }
/// Elements per 16-byte vector: rows are padded to a multiple of this (zeros).
inline int64_t elements_per_16b(StorageType t) { return 16 / static_cast<int64_t>(element_size(t)); }

/// What the launchers need to know about the device.
struct DeviceInfo {
  int device = 0;
  int num_sms = 1;
  size_t smem_optin = 48 * 1024;  // max dynamic shared memory per block (opt-in)
  size_t l2_bytes = 0;
};

// ------------------------------------------------------------------------- launchers
// Row-major arrays; `dpad` = row length in elements on the device (dim rounded up to 16 bytes).

/// dst (n, dpad) in `t` <- src (n, dim) float32, padding zeroed.
void launch_store_rows(StorageType t, const float* src, int64_t n, int64_t dim, int64_t dpad, void* dst,
                       cudaStream_t s);
/// dst (n, dim) float32 <- src (n, dpad) in `t`.
void launch_load_rows(StorageType t, const void* src, int64_t n, int64_t dim, int64_t dpad, float* dst,
                      cudaStream_t s);
/// deleted[indices[i]] = 1 for i < m.
void launch_mark_deleted(const int64_t* indices, int64_t m, uint8_t* deleted, cudaStream_t s);
/// skip[i] = skip[i] || deleted[i] for i < n (a search's filter joined with the tombstones).
void launch_or_mask(const uint8_t* deleted, int64_t n, uint8_t* skip, cudaStream_t s);

/// Queries (qb, dim) float32 -> qf (qb, dpad) float32 (when qf != nullptr) and, for the tensor-core
/// path (qhi != nullptr), the split hi + lo (qb, dpad) in `t` of the query scaled by a power of two
/// (max |q| in [1, 2)), with inv_scale (qb,) to undo it on the scores.
void launch_prep_queries(StorageType t, const float* q, int qb, int64_t dim, int64_t dpad, float* qf, void* qhi,
                         void* qlo, float* inv_scale, cudaStream_t s);

/// Streaming scores for nq <= 8 queries qf (nq, dpad): keys[q * keys_ld + r] for the `rows` rows
/// from row_begin of X (.., dpad); tombstoned rows get key 0.
void launch_gemv(StorageType t, const void* X, int64_t row_begin, int rows, int64_t dpad, const float* qf, int nq,
                 const uint8_t* deleted, uint32_t* keys, int64_t keys_ld, const DeviceInfo& info, cudaStream_t s);
/// The largest query count launch_gemv takes in one launch at this dpad (0: the queries do not fit
/// in shared memory; use launch_gemm).
int gemv_max_queries(int64_t dpad, const DeviceInfo& info);

/// Tiled scores for a block of qb queries. float32 storage: SIMT FMA on qf. float16 / bfloat16:
/// tensor cores (float32 accumulate) on the split query qhi + qlo, scores times inv_scale.
void launch_gemm(StorageType t, const float* qf, const void* qhi, const void* qlo, const float* inv_scale, int qb,
                 const void* X, int64_t row_begin, int rows, int64_t dpad, const uint8_t* deleted, uint32_t* keys,
                 int64_t keys_ld, cudaStream_t s);
/// Rows per tile of launch_gemm (chunks are cut in multiples of it) and its grid limit in rows.
inline constexpr int kGemmRowTile = 128;
inline constexpr int64_t kGemmMaxRows = 65535LL * kGemmRowTile;

/// Level 0 of the select: for each query q < qb and segment s of seg_len keys of the chunk
/// (chunk_len keys at keys + q * keys_ld, rows row_begin ..), the best k items, sorted, written to
/// cand[q * cand_ld + (1 + s) * k ..] (slot 0 holds the running top-k of earlier chunks).
void launch_select_segments(const uint32_t* keys, int64_t keys_ld, int qb, int chunk_len, int seg_len,
                            int64_t row_begin, int k, uint64_t* cand, int64_t cand_ld, cudaStream_t s);
/// One merge level: `lists` sorted lists of k items per query (in + q * in_ld), taken `group` at a
/// time, -> ceil(lists / group) sorted lists of k at out + q * out_ld. Among equal keys the list
/// order must be the row order (true by construction: lists cover increasing row ranges).
void launch_merge(const uint64_t* in, int64_t in_ld, int qb, int lists, int group, int k, uint64_t* out,
                  int64_t out_ld, cudaStream_t s);
/// Items (qb, k) at cand (row stride cand_ld) -> indices int64 (qb, k) and scores float32 (qb, k),
/// empty items as -1 / -inf.
void launch_finalize(const uint64_t* cand, int64_t cand_ld, int qb, int k, int64_t* indices, float* scores,
                     cudaStream_t s);

/// Threads per select block and the most items a select block holds.
inline constexpr int kSelectThreads = 256;
inline constexpr int kSelectMaxK = 1024;
/// Lists merged per block.
inline constexpr int kMergeGroup = 16;

}  // namespace ragcore::cuda::detail
