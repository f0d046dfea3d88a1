// Scoring kernels of the CUDA dense store: they write the order-preserving key of
// score(q, r) = <query q, row r> for one chunk of rows, and key 0 for tombstoned rows.
//
// - gemv: 1..8 queries. Memory-bound: each group of G lanes streams one row with 16-byte loads
//   (evict-first, up to four in flight per lane), converts to float and accumulates in float32
//   against the queries held in shared memory; the group then reduces with shuffles. The float32
//   query is used as is, so scores match the CPU path to float32 rounding for every storage type.
// - gemm float32: 64 queries x 128 rows per block, SIMT FMA, register-prefetched double buffer.
// - gemm float16 / bfloat16: the same tile on tensor cores (WMMA 16x16x16, float32 accumulate,
//   cp.async double buffer). The query is split as q*s = hi + lo (both in the storage type; s a
//   power of two putting max|q| in [1, 2), undone on the scores), and each tile is multiplied twice:
//   the stored operand is exact in its type, so the scores keep near-float32 accuracy instead of the
//   ~1e-3 of a query rounded to 16 bits, for twice the tensor-core work. The split leaves at most
//   2^-16 |q_i| per component for bfloat16 (8 + 8 significant bits), and 2^-22 |q_i| + 2^-25 s^-1 for
//   float16 (lo may be subnormal); the score error is that times sum |x_i|: for unit vectors up to
//   ~1.5e-5 in bfloat16 (typically far less), ~3e-7 in float16.
#include <mma.h>

#include "common.cuh"

namespace ragcore::cuda::detail {
namespace {

// ------------------------------------------------------------------------------ helpers
__device__ __forceinline__ void unpack(const uint4& raw, float (&f)[4]) {
  f[0] = __uint_as_float(raw.x);
  f[1] = __uint_as_float(raw.y);
  f[2] = __uint_as_float(raw.z);
  f[3] = __uint_as_float(raw.w);
}
__device__ __forceinline__ void unpack(const uint4& raw, float (&f)[8], __half) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2 h;
    memcpy(&h, &w[i], 4);
    const float2 v = __half22float2(h);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}
__device__ __forceinline__ void unpack(const uint4& raw, float (&f)[8], __nv_bfloat16) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __nv_bfloat162 h;
    memcpy(&h, &w[i], 4);
    const float2 v = __bfloat1622float2(h);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

template <class T>
struct Unpacker {
  static constexpr int kElems = 8;
  __device__ __forceinline__ static void run(const uint4& raw, float (&f)[kElems]) { unpack(raw, f, T()); }
};
template <>
struct Unpacker<float> {
  static constexpr int kElems = 4;
  __device__ __forceinline__ static void run(const uint4& raw, float (&f)[kElems]) { unpack(raw, f); }
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;  // 0: nothing is read, the 16 bytes are zero-filled
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Write 4 consecutive keys of query row `krow` from column c (c % 4 == 0) of the tile.
__device__ __forceinline__ void store_keys4(uint32_t* __restrict__ krow, int c, int rows, int64_t row_begin,
                                            const uint8_t* __restrict__ deleted, const float (&v)[4]) {
  uint32_t k4[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const bool live = c + j < rows && !deleted[row_begin + c + j];
    k4[j] = live ? key_of(v[j]) : 0u;
  }
  if (c + 3 < rows) {
    *reinterpret_cast<uint4*>(krow + c) = make_uint4(k4[0], k4[1], k4[2], k4[3]);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (c + j < rows) krow[c + j] = k4[j];
  }
}

// --------------------------------------------------------------------------------- gemv
constexpr int kGemvThreads = 256;
constexpr int kGemvUnroll = 4;  // 16-byte loads in flight per lane

template <class T, int NQ>
__global__ void __launch_bounds__(kGemvThreads)
    gemv_kernel(const T* __restrict__ X, int64_t row_begin, int rows, int dpad, int group_shift,
                const float* __restrict__ Q, int nq, const uint8_t* __restrict__ deleted, uint32_t* __restrict__ keys,
                int64_t keys_ld) {
  extern __shared__ float4 gemv_smem[];
  float* sq = reinterpret_cast<float*>(gemv_smem);  // (NQ, dpad), zeros past nq
  for (int i = threadIdx.x; i < NQ * dpad; i += kGemvThreads) sq[i] = i < nq * dpad ? Q[i] : 0.f;
  __syncthreads();

  using U = Unpacker<T>;
  constexpr int E = U::kElems;
  const int V = dpad / E;  // 16-byte vectors per row
  const int G = 1 << group_shift;
  const int lane = threadIdx.x & 31;
  const int lig = lane & (G - 1);  // lane in group
  const int groups_per_warp = 32 >> group_shift;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kGemvThreads + threadIdx.x) >> 5;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * kGemvThreads) >> 5;

  for (int64_t base = warp * groups_per_warp; base < rows; base += nwarps * groups_per_warp) {  // warp-uniform
    const int64_t r = base + (lane >> group_shift);
    const bool valid = r < rows;
    const uint4* row = reinterpret_cast<const uint4*>(X + (row_begin + (valid ? r : 0)) * dpad);
    float acc[NQ];
#pragma unroll
    for (int q = 0; q < NQ; ++q) acc[q] = 0.f;
    for (int v0 = lig; v0 < V; v0 += kGemvUnroll * G) {
      uint4 raw[kGemvUnroll];
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int v = v0 + u * G;
        raw[u] = (valid && v < V) ? __ldcs(row + v) : make_uint4(0u, 0u, 0u, 0u);
      }
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int v = v0 + u * G;
        if (v < V) {
          float f[E];
          U::run(raw[u], f);
#pragma unroll
          for (int q = 0; q < NQ; ++q) {
            const float4* qv = reinterpret_cast<const float4*>(sq + q * dpad + v * E);
#pragma unroll
            for (int e4 = 0; e4 < E / 4; ++e4) {
              const float4 w = qv[e4];
              acc[q] = fmaf(f[4 * e4 + 0], w.x, acc[q]);
              acc[q] = fmaf(f[4 * e4 + 1], w.y, acc[q]);
              acc[q] = fmaf(f[4 * e4 + 2], w.z, acc[q]);
              acc[q] = fmaf(f[4 * e4 + 3], w.w, acc[q]);
            }
          }
        }
      }
    }
    for (int off = G >> 1; off > 0; off >>= 1) {
#pragma unroll
      for (int q = 0; q < NQ; ++q) acc[q] += __shfl_xor_sync(0xffffffffu, acc[q], off);
    }
    if (valid && lig == 0) {
      const bool dead = deleted[row_begin + r] != 0;
#pragma unroll
      for (int q = 0; q < NQ; ++q)
        if (q < nq) keys[q * keys_ld + r] = dead ? 0u : key_of(acc[q]);
    }
  }
}

template <class T, int NQ>
void gemv_launch(const void* X, int64_t row_begin, int rows, int64_t dpad, const float* qf, int nq,
                 const uint8_t* deleted, uint32_t* keys, int64_t keys_ld, const DeviceInfo& info, cudaStream_t s) {
  constexpr int E = Unpacker<T>::kElems;
  const int V = static_cast<int>(dpad / E);
  int G = 4;  // lanes per row: about four vectors per lane, at least 64 contiguous bytes, at most a warp
  while (G < 32 && G * kGemvUnroll < V) G <<= 1;
  int shift = 0;
  while ((1 << shift) < G) ++shift;
  const size_t smem = static_cast<size_t>(NQ) * static_cast<size_t>(dpad) * sizeof(float);
  auto kernel = gemv_kernel<T, NQ>;
  if (smem > 48 * 1024)
    RAGCORE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  int per_sm = 0;
  RAGCORE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kGemvThreads, smem));
  if (per_sm < 1) per_sm = 1;
  const int64_t rows_per_block = static_cast<int64_t>(kGemvThreads / 32) * (32 / G);
  const int64_t want = (rows + rows_per_block - 1) / rows_per_block;
  const int64_t cap = static_cast<int64_t>(per_sm) * info.num_sms;
  const int blocks = static_cast<int>(want < cap ? want : cap);
  kernel<<<blocks, kGemvThreads, smem, s>>>(static_cast<const T*>(X), row_begin, rows, static_cast<int>(dpad), shift,
                                           qf, nq, deleted, keys, keys_ld);
  RAGCORE_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void gemv_dispatch(const void* X, int64_t row_begin, int rows, int64_t dpad, const float* qf, int nq,
                   const uint8_t* deleted, uint32_t* keys, int64_t keys_ld, const DeviceInfo& info, cudaStream_t s) {
  if (nq <= 1)
    gemv_launch<T, 1>(X, row_begin, rows, dpad, qf, nq, deleted, keys, keys_ld, info, s);
  else if (nq <= 2)
    gemv_launch<T, 2>(X, row_begin, rows, dpad, qf, nq, deleted, keys, keys_ld, info, s);
  else if (nq <= 4)
    gemv_launch<T, 4>(X, row_begin, rows, dpad, qf, nq, deleted, keys, keys_ld, info, s);
  else
    gemv_launch<T, 8>(X, row_begin, rows, dpad, qf, nq, deleted, keys, keys_ld, info, s);
}

// ------------------------------------------------------------------------- gemm float32
constexpr int kTileQ = 64;    // queries per block
constexpr int kTileR = kGemmRowTile;  // rows per block
constexpr int kGemmThreads = 256;
constexpr int kF32K = 16;

__global__ void __launch_bounds__(kGemmThreads)
    gemm_f32_kernel(const float* __restrict__ Q, int qb, const float* __restrict__ X, int64_t row_begin, int rows,
                    int dpad, const uint8_t* __restrict__ deleted, uint32_t* __restrict__ keys, int64_t keys_ld) {
  __shared__ __align__(16) float As[2][kF32K][kTileQ + 4];
  __shared__ __align__(16) float Bs[2][kF32K][kTileR + 4];
  const int tid = threadIdx.x;
  const int q0 = blockIdx.x * kTileQ;
  const int r0 = blockIdx.y * kTileR;
  // loading: 4 threads per (query or row), 4 consecutive k each
  const int lr = tid >> 2;
  const int lk = (tid & 3) * 4;
  const bool a_ok = q0 + lr < qb;
  const float* a_src = Q + static_cast<int64_t>(a_ok ? q0 + lr : 0) * dpad;
  bool b_ok[2];
  const float* b_src[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = r0 + lr + 64 * h;
    b_ok[h] = r < rows;
    b_src[h] = X + (row_begin + (b_ok[h] ? r : 0)) * dpad;
  }
  float4 ra, rb[2];
  const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
  auto load = [&](int kt) {
    const int k = kt * kF32K + lk;  // dpad % 4 == 0: a float4 is all inside or all outside
    ra = (a_ok && k < dpad) ? *reinterpret_cast<const float4*>(a_src + k) : zero;
#pragma unroll
    for (int h = 0; h < 2; ++h) rb[h] = (b_ok[h] && k < dpad) ? *reinterpret_cast<const float4*>(b_src[h] + k) : zero;
  };
  auto store = [&](int buf) {
    As[buf][lk + 0][lr] = ra.x;
    As[buf][lk + 1][lr] = ra.y;
    As[buf][lk + 2][lr] = ra.z;
    As[buf][lk + 3][lr] = ra.w;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      Bs[buf][lk + 0][lr + 64 * h] = rb[h].x;
      Bs[buf][lk + 1][lr + 64 * h] = rb[h].y;
      Bs[buf][lk + 2][lr + 64 * h] = rb[h].z;
      Bs[buf][lk + 3][lr + 64 * h] = rb[h].w;
    }
  };

  // compute: thread (ty, tx) owns queries ty*4 .. +3 and rows tx*4 .. +3, 64 + tx*4 .. +3
  const int ty = tid >> 4;
  const int tx = tid & 15;
  float acc[4][8];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

  const int ktiles = (dpad + kF32K - 1) / kF32K;
  load(0);
  store(0);
  __syncthreads();
  for (int kt = 0; kt < ktiles; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < ktiles) load(kt + 1);
#pragma unroll
    for (int kk = 0; kk < kF32K; ++kk) {
      const float4 a = *reinterpret_cast<const float4*>(&As[buf][kk][ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][kk][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][kk][64 + tx * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w};
      const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    if (kt + 1 < ktiles) store(buf ^ 1);
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int q = q0 + ty * 4 + i;
    if (q >= qb) continue;
    uint32_t* krow = keys + q * keys_ld + r0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float v[4] = {acc[i][4 * h + 0], acc[i][4 * h + 1], acc[i][4 * h + 2], acc[i][4 * h + 3]};
      store_keys4(krow, 64 * h + tx * 4, rows - r0, row_begin + r0, deleted, v);
    }
  }
}

// ---------------------------------------------------------------- gemm float16 / bfloat16
constexpr int kTcK = 32;          // k per stage
constexpr int kTcLd = kTcK + 8;   // shared row stride in elements (80 bytes: conflict-free 16-byte rows)
constexpr int kTcLdc = kTileR + 4;  // float stride of the epilogue tile
constexpr int kTcStageElems = (2 * kTileQ + kTileR) * kTcLd;  // hi, lo, rows
constexpr size_t kTcSmemBytes = 2 * kTcStageElems * 2;        // two stages of 16-bit elements
static_assert(kTileQ * kTcLdc * sizeof(float) <= kTcSmemBytes, "epilogue tile reuses the stage buffers");

template <class T>
__global__ void __launch_bounds__(kGemmThreads)
    gemm_tc_kernel(const T* __restrict__ Qhi, const T* __restrict__ Qlo, const float* __restrict__ inv_scale, int qb,
                   const T* __restrict__ X, int64_t row_begin, int rows, int dpad, const uint8_t* __restrict__ deleted,
                   uint32_t* __restrict__ keys, int64_t keys_ld) {
  using namespace nvcuda;
  __shared__ __align__(128) unsigned char smem_raw[kTcSmemBytes];
  T* smem = reinterpret_cast<T*>(smem_raw);
  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int wq = warp >> 2;  // 0..1: queries wq*32 .. +31
  const int wr = warp & 3;   // 0..3: rows wr*32 .. +31
  const int q0 = blockIdx.x * kTileQ;
  const int r0 = blockIdx.y * kTileR;

  // loading: a 16-byte chunk = 8 elements; 4 chunks per 32-element row slice
  const int lr = tid >> 2;
  const int lc = (tid & 3) * 8;
  const bool a_ok = q0 + lr < qb;
  const int64_t a_off = static_cast<int64_t>(a_ok ? q0 + lr : 0) * dpad;
  bool b_ok[2];
  const T* b_src[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = r0 + lr + 64 * h;
    b_ok[h] = r < rows;
    b_src[h] = X + (row_begin + (b_ok[h] ? r : 0)) * dpad;
  }
  auto load_stage = [&](int kt, int stage) {
    T* s_hi = smem + stage * kTcStageElems;
    T* s_lo = s_hi + kTileQ * kTcLd;
    T* s_x = s_lo + kTileQ * kTcLd;
    const int k = kt * kTcK + lc;  // dpad % 8 == 0: a chunk is all inside or all outside
    const bool kin = k < dpad;
    cp_async16(s_hi + lr * kTcLd + lc, Qhi + a_off + (kin ? k : 0), a_ok && kin);
    cp_async16(s_lo + lr * kTcLd + lc, Qlo + a_off + (kin ? k : 0), a_ok && kin);
#pragma unroll
    for (int h = 0; h < 2; ++h)
      cp_async16(s_x + (lr + 64 * h) * kTcLd + lc, b_src[h] + (kin ? k : 0), b_ok[h] && kin);
  };

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  const int ktiles = (dpad + kTcK - 1) / kTcK;
  load_stage(0, 0);
  cp_async_commit();
  for (int kt = 0; kt < ktiles; ++kt) {
    if (kt + 1 < ktiles) load_stage(kt + 1, (kt + 1) & 1);
    cp_async_commit();  // possibly empty: keeps the group count uniform
    cp_async_wait<1>();  // stage kt has landed
    __syncthreads();
    const T* s_hi = smem + (kt & 1) * kTcStageElems;
    const T* s_lo = s_hi + kTileQ * kTcLd;
    const T* s_x = s_lo + kTileQ * kTcLd;
#pragma unroll
    for (int kk = 0; kk < kTcK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a_hi[2], a_lo[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(a_hi[i], s_hi + (wq * 32 + i * 16) * kTcLd + kk, kTcLd);
        wmma::load_matrix_sync(a_lo[i], s_lo + (wq * 32 + i * 16) * kTcLd + kk, kTcLd);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], s_x + (wr * 32 + j * 16) * kTcLd + kk, kTcLd);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          wmma::mma_sync(acc[i][j], a_lo[i], b[j], acc[i][j]);
          wmma::mma_sync(acc[i][j], a_hi[i], b[j], acc[i][j]);
        }
    }
    __syncthreads();  // stage kt & 1 is refilled by the next iteration
  }
  cp_async_wait<0>();
  __syncthreads();

  // epilogue through shared memory: coalesced 16-byte key stores
  float* sc = reinterpret_cast<float*>(smem_raw);
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(sc + (wq * 32 + i * 16) * kTcLdc + wr * 32 + j * 16, acc[i][j], kTcLdc,
                              wmma::mem_row_major);
  __syncthreads();
  constexpr int kChunks = kTileQ * kTileR / 4;
  for (int c = tid; c < kChunks; c += kGemmThreads) {
    const int ql = c / (kTileR / 4);
    const int col = (c % (kTileR / 4)) * 4;
    const int q = q0 + ql;
    if (q >= qb) continue;
    const float inv = inv_scale[q];
    const float4 s4 = *reinterpret_cast<const float4*>(sc + ql * kTcLdc + col);
    const float v[4] = {s4.x * inv, s4.y * inv, s4.z * inv, s4.w * inv};
    store_keys4(keys + q * keys_ld + r0, col, rows - r0, row_begin + r0, deleted, v);
  }
}

}  // namespace

int gemv_max_queries(int64_t dpad, const DeviceInfo& info) {
  const size_t per_query = static_cast<size_t>(dpad) * sizeof(float);
  const size_t avail = info.smem_optin > 1024 ? info.smem_optin - 1024 : 0;
  int nq = 8;
  while (nq > 0 && static_cast<size_t>(nq) * per_query > avail) nq >>= 1;
  return nq;
}

void launch_gemv(StorageType t, const void* X, int64_t row_begin, int rows, int64_t dpad, const float* qf, int nq,
                 const uint8_t* deleted, uint32_t* keys, int64_t keys_ld, const DeviceInfo& info, cudaStream_t s) {
  if (rows <= 0 || nq <= 0) return;
  switch (t) {
    case StorageType::float32:
      gemv_dispatch<float>(X, row_begin, rows, dpad, qf, nq, deleted, keys, keys_ld, info, s);
      break;
    case StorageType::float16:
      gemv_dispatch<__half>(X, row_begin, rows, dpad, qf, nq, deleted, keys, keys_ld, info, s);
      break;
    case StorageType::bfloat16:
      gemv_dispatch<__nv_bfloat16>(X, row_begin, rows, dpad, qf, nq, deleted, keys, keys_ld, info, s);
      break;
  }
}

void launch_gemm(StorageType t, const float* qf, const void* qhi, const void* qlo, const float* inv_scale, int qb,
                 const void* X, int64_t row_begin, int rows, int64_t dpad, const uint8_t* deleted, uint32_t* keys,
                 int64_t keys_ld, cudaStream_t s) {
  if (rows <= 0 || qb <= 0) return;
  const dim3 grid((qb + kTileQ - 1) / kTileQ, (rows + kTileR - 1) / kTileR);  // x: queries, so blocks
                                                                              // side by side share rows in L2
  switch (t) {
    case StorageType::float32:
      gemm_f32_kernel<<<grid, kGemmThreads, 0, s>>>(qf, qb, static_cast<const float*>(X), row_begin, rows,
                                                    static_cast<int>(dpad), deleted, keys, keys_ld);
      break;
    case StorageType::float16:
      gemm_tc_kernel<__half><<<grid, kGemmThreads, 0, s>>>(
          static_cast<const __half*>(qhi), static_cast<const __half*>(qlo), inv_scale, qb,
          static_cast<const __half*>(X), row_begin, rows, static_cast<int>(dpad), deleted, keys, keys_ld);
      break;
    case StorageType::bfloat16:
      gemm_tc_kernel<__nv_bfloat16><<<grid, kGemmThreads, 0, s>>>(
          static_cast<const __nv_bfloat16*>(qhi), static_cast<const __nv_bfloat16*>(qlo), inv_scale, qb,
          static_cast<const __nv_bfloat16*>(X), row_begin, rows, static_cast<int>(dpad), deleted, keys, keys_ld);
      break;
  }
  RAGCORE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace ragcore::cuda::detail
