// The dense store's small kernels: rows converted to and from the storage type, deleted marks and
// search-time masks, query preparation, and the final (index, score) pairs of the top-k.
#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "ragcore/common.hpp"

namespace ragcore::cuda {
namespace detail {
namespace {

constexpr int kSmallThreads = 256;

int grid_for(int64_t work, int threads, int64_t cap = 65535LL * 16) {
  const int64_t b = (work + threads - 1) / threads;
  return static_cast<int>(std::max<int64_t>(1, std::min(b, cap)));
}

template <class T>
__global__ void store_rows_kernel(const float* __restrict__ src, int64_t n, int64_t dim, int64_t dpad,
                                  T* __restrict__ dst) {
  const int64_t total = n * dpad;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / dpad, c = i - r * dpad;
    dst[i] = Storage<T>::to(c < dim ? src[r * dim + c] : 0.f);
  }
}

template <class T>
__global__ void load_rows_kernel(const T* __restrict__ src, int64_t n, int64_t dim, int64_t dpad,
                                 float* __restrict__ dst) {
  const int64_t total = n * dim;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / dim, c = i - r * dim;
    dst[i] = Storage<T>::from(src[r * dpad + c]);
  }
}

__global__ void mark_deleted_kernel(const int64_t* __restrict__ indices, int64_t m, uint8_t* __restrict__ deleted) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < m;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    deleted[indices[i]] = 1;
}

__global__ void or_mask_kernel(const uint8_t* __restrict__ deleted, int64_t n, uint8_t* __restrict__ skip) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    skip[i] = (skip[i] != 0 || deleted[i] != 0) ? 1 : 0;
}

// One block per query row.
template <class T>
__global__ void __launch_bounds__(kSmallThreads)
    prep_queries_kernel(const float* __restrict__ q, int64_t dim, int64_t dpad, float* __restrict__ qf,
                        T* __restrict__ qhi, T* __restrict__ qlo, float* __restrict__ inv_scale) {
  using Reduce = cub::BlockReduce<float, kSmallThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ float s_scale;
  const float* src = q + blockIdx.x * dim;
  const int64_t out = blockIdx.x * dpad;
  if (qhi != nullptr) {
    float amax = 0.f;
    for (int64_t c = threadIdx.x; c < dim; c += kSmallThreads) amax = fmaxf(amax, fabsf(src[c]));
    amax = Reduce(tmp).Reduce(amax, [](float a, float b) { return fmaxf(a, b); });
    if (threadIdx.x == 0) {
      int sh = 0;  // scale 2^sh puts max|q| in [1, 2): keeps hi and lo inside float16's range
      if (amax > 0.f && isfinite(amax)) {
        int e = 0;
        frexpf(amax, &e);  // amax = m * 2^e, m in [0.5, 1)
        sh = min(max(1 - e, -126), 126);
      }
      s_scale = ldexpf(1.f, sh);
      inv_scale[blockIdx.x] = ldexpf(1.f, -sh);
    }
    __syncthreads();
  }
  const float scale = qhi != nullptr ? s_scale : 1.f;
  for (int64_t c = threadIdx.x; c < dpad; c += kSmallThreads) {
    const float v = c < dim ? src[c] : 0.f;
    if (qf != nullptr) qf[out + c] = v;
    if (qhi != nullptr) {
      const float vs = v * scale;
      const T hi = Storage<T>::to(vs);
      qhi[out + c] = hi;
      qlo[out + c] = Storage<T>::to(vs - Storage<T>::from(hi));
    }
  }
}

__global__ void finalize_kernel(const uint64_t* __restrict__ cand, int64_t cand_ld, int qb, int k,
                                int64_t* __restrict__ indices, float* __restrict__ scores) {
  const int64_t total = static_cast<int64_t>(qb) * k;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t q = t / k, j = t - q * k;
    const uint64_t item = cand[q * cand_ld + j];
    const uint32_t key = static_cast<uint32_t>(item >> 32);
    indices[t] = key != 0u ? static_cast<int64_t>(~static_cast<uint32_t>(item)) : int64_t{-1};
    scores[t] = key != 0u ? score_of_key(key) : -INFINITY;
  }
}

}  // namespace

void launch_store_rows(StorageType t, const float* src, int64_t n, int64_t dim, int64_t dpad, void* dst,
                       cudaStream_t s) {
  if (n <= 0) return;
  const int grid = grid_for(n * dpad, kSmallThreads);
  switch (t) {
    case StorageType::float32:
      store_rows_kernel<<<grid, kSmallThreads, 0, s>>>(src, n, dim, dpad, static_cast<float*>(dst));
      break;
    case StorageType::float16:
      store_rows_kernel<<<grid, kSmallThreads, 0, s>>>(src, n, dim, dpad, static_cast<__half*>(dst));
      break;
    case StorageType::bfloat16:
      store_rows_kernel<<<grid, kSmallThreads, 0, s>>>(src, n, dim, dpad, static_cast<__nv_bfloat16*>(dst));
      break;
  }
  RAGCORE_CUDA_CHECK(cudaGetLastError());
}

void launch_load_rows(StorageType t, const void* src, int64_t n, int64_t dim, int64_t dpad, float* dst,
                      cudaStream_t s) {
  if (n <= 0) return;
  const int grid = grid_for(n * dim, kSmallThreads);
  switch (t) {
    case StorageType::float32:
      load_rows_kernel<<<grid, kSmallThreads, 0, s>>>(static_cast<const float*>(src), n, dim, dpad, dst);
      break;
    case StorageType::float16:
      load_rows_kernel<<<grid, kSmallThreads, 0, s>>>(static_cast<const __half*>(src), n, dim, dpad, dst);
      break;
    case StorageType::bfloat16:
      load_rows_kernel<<<grid, kSmallThreads, 0, s>>>(static_cast<const __nv_bfloat16*>(src), n, dim, dpad, dst);
      break;
  }
  RAGCORE_CUDA_CHECK(cudaGetLastError());
}

void launch_mark_deleted(const int64_t* indices, int64_t m, uint8_t* deleted, cudaStream_t s) {
  if (m <= 0) return;
  mark_deleted_kernel<<<grid_for(m, kSmallThreads), kSmallThreads, 0, s>>>(indices, m, deleted);
  RAGCORE_CUDA_CHECK(cudaGetLastError());
}

void launch_or_mask(const uint8_t* deleted, int64_t n, uint8_t* skip, cudaStream_t s) {
  if (n <= 0) return;
  or_mask_kernel<<<grid_for(n, kSmallThreads), kSmallThreads, 0, s>>>(deleted, n, skip);
  RAGCORE_CUDA_CHECK(cudaGetLastError());
}

void launch_prep_queries(StorageType t, const float* q, int qb, int64_t dim, int64_t dpad, float* qf, void* qhi,
                         void* qlo, float* inv_scale, cudaStream_t s) {
  if (qb <= 0) return;
  switch (t) {
    case StorageType::float32:
      prep_queries_kernel<float><<<qb, kSmallThreads, 0, s>>>(q, dim, dpad, qf, nullptr, nullptr, inv_scale);
      break;
    case StorageType::float16:
      prep_queries_kernel<__half><<<qb, kSmallThreads, 0, s>>>(q, dim, dpad, qf, static_cast<__half*>(qhi),
                                                               static_cast<__half*>(qlo), inv_scale);
      break;
    case StorageType::bfloat16:
      prep_queries_kernel<__nv_bfloat16><<<qb, kSmallThreads, 0, s>>>(
          q, dim, dpad, qf, static_cast<__nv_bfloat16*>(qhi), static_cast<__nv_bfloat16*>(qlo), inv_scale);
      break;
  }
  RAGCORE_CUDA_CHECK(cudaGetLastError());
}

void launch_finalize(const uint64_t* cand, int64_t cand_ld, int qb, int k, int64_t* indices, float* scores,
                     cudaStream_t s) {
  if (qb <= 0) return;
  finalize_kernel<<<grid_for(static_cast<int64_t>(qb) * k, kSmallThreads), kSmallThreads, 0, s>>>(
      cand, cand_ld, qb, k, indices, scores);
  RAGCORE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace detail
}  // namespace ragcore::cuda
