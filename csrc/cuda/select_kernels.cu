// Top-k select of the CUDA dense store, k <= 1024, exact, ties broken by the lower row id.
//
// One block selects the best k of m keys: a radix select on the order-preserving uint32 key
// (up to four 8-bit passes with a shared-memory histogram, warp-aggregated increments), which finds
// the k-th key T; then one ordered pass gathers every key > T plus the first keys == T in position
// order (a block scan gives each tie its rank), and a bitonic sort of the k winners on the 64-bit
// item (key, ~row) puts them best first. Positions are in row order within a segment, and the merge
// inputs are laid out so that equal keys appear in row order too, so "first in position order" is
// "lowest row id".
//
// Level 0 selects per (query, segment of the chunk's score row); merge levels reduce the running
// top-k of earlier chunks plus the segments' lists, kMergeGroup lists per block, down to one list.
#include <cub/block/block_scan.cuh>

#include "common.cuh"

namespace ragcore::cuda::detail {
namespace {

// Keys of one segment of a score row; items carry the row id.
struct KeySource {
  const uint32_t* __restrict__ keys;
  uint32_t first_row;
  __device__ __forceinline__ uint32_t key(int i) const { return keys[i]; }
  __device__ __forceinline__ void load(int i, uint32_t& key, uint64_t& item) const {
    key = keys[i];
    item = make_item(key, first_row + static_cast<uint32_t>(i));
  }
};

// Sorted item lists laid back to back.
struct ItemSource {
  const uint64_t* __restrict__ items;
  __device__ __forceinline__ uint32_t key(int i) const { return static_cast<uint32_t>(items[i] >> 32); }
  __device__ __forceinline__ void load(int i, uint32_t& key, uint64_t& item) const {
    item = items[i];
    key = static_cast<uint32_t>(item >> 32);
  }
};

struct SelectShared {
  typename cub::BlockScan<int, kSelectThreads>::TempStorage scan;
  uint64_t items[kSelectMaxK];
  uint32_t hist[256];
  uint32_t bin, above, count;
  int gt_slot;
};

// The best k (1 <= k <= kSelectMaxK) of src[0, m), best first, into out[0, k) (empty items 0 at
// the end). Every thread of the block must call it.
template <class Src>
__device__ void block_select(const Src& src, int m, int k, uint64_t* __restrict__ out, SelectShared& sh) {
  using Scan = cub::BlockScan<int, kSelectThreads>;
  const int tid = threadIdx.x;
  const int lane = tid & 31;

  // ---- radix select of the k-th key: after each pass, `need` keys equal to `prefix` under `mask`
  // are still to be taken, all keys above it under the mask are in.
  uint32_t prefix = 0, mask = 0;
  int need = k;
  int total = 0;  // valid (non-zero) keys
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    for (int i = tid; i < 256; i += kSelectThreads) sh.hist[i] = 0;
    __syncthreads();
    for (int base = 0; base < m; base += kSelectThreads) {  // uniform trip count: the warp stays whole
      const int i = base + tid;
      const uint32_t key = i < m ? src.key(i) : 0u;
      const bool take = key != 0u && (key & mask) == prefix;
      const uint32_t bin = take ? (key >> shift) & 255u : 256u;
      const unsigned peers = __match_any_sync(0xffffffffu, bin);
      if (take && lane == __ffs(peers) - 1) atomicAdd(&sh.hist[bin], static_cast<uint32_t>(__popc(peers)));
    }
    __syncthreads();
    // counts from the top bin down: thread t holds bin 255 - t
    const int c = tid < 256 ? static_cast<int>(sh.hist[255 - tid]) : 0;
    int incl = 0, agg = 0;
    Scan(sh.scan).InclusiveSum(c, incl, agg);
    if (pass == 0) {
      total = agg;
      if (total <= k) {  // take every valid key: prefix 0 under mask 0, ranks < total
        need = total;
        break;
      }
    }
    if (tid < 256) {
      const int excl = incl - c;
      if (excl < need && need <= incl) {
        sh.bin = 255u - static_cast<uint32_t>(tid);
        sh.above = static_cast<uint32_t>(excl);
        sh.count = static_cast<uint32_t>(c);
      }
    }
    __syncthreads();
    const uint32_t bin = sh.bin;
    need -= static_cast<int>(sh.above);
    const int count = static_cast<int>(sh.count);
    prefix |= bin << shift;
    mask |= 0xffu << shift;
    if (count == need) break;  // the whole bin is taken: no need to resolve it further
  }

  // ---- gather: keys above the threshold (any order), then the first `need` ties in position order
  const int kk = total < k ? total : k;
  const int n_gt = kk - need;
  if (tid == 0) sh.gt_slot = 0;
  __syncthreads();
  int gt_seen = 0, eq_seen = 0;
  for (int base = 0; base < m && (gt_seen < n_gt || eq_seen < need); base += kSelectThreads) {
    const int i = base + tid;
    uint32_t key = 0;
    uint64_t item = 0;
    if (i < m) src.load(i, key, item);
    const uint32_t mk = key & mask;
    const bool gt = key != 0u && mk > prefix;
    const bool eq = key != 0u && mk == prefix;
    int rank = 0, eq_tile = 0;
    Scan(sh.scan).ExclusiveSum(eq ? 1 : 0, rank, eq_tile);
    if (gt) sh.items[atomicAdd(&sh.gt_slot, 1)] = item;
    if (eq && eq_seen + rank < need) sh.items[n_gt + eq_seen + rank] = item;
    eq_seen += eq_tile;
    gt_seen += __syncthreads_count(gt);  // also the barrier before the next scan
  }
  __syncthreads();

  // ---- bitonic sort of the kk winners, descending (padded with empty items to a power of two)
  int p2 = 1;
  while (p2 < kk) p2 <<= 1;
  for (int i = kk + tid; i < p2; i += kSelectThreads) sh.items[i] = 0;
  __syncthreads();
  for (int size = 2; size <= p2; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int t = tid; t < (p2 >> 1); t += kSelectThreads) {
        const int a_i = 2 * t - (t & (stride - 1));
        const int b_i = a_i + stride;
        const uint64_t a = sh.items[a_i], b = sh.items[b_i];
        const bool desc = (a_i & size) == 0;
        if ((a < b) == desc) {
          sh.items[a_i] = b;
          sh.items[b_i] = a;
        }
      }
      __syncthreads();
    }
  }
  for (int i = tid; i < k; i += kSelectThreads) out[i] = i < kk ? sh.items[i] : 0ull;
}

__global__ void __launch_bounds__(kSelectThreads)
    select_segments_kernel(const uint32_t* __restrict__ keys, int64_t keys_ld, int chunk_len, int seg_len,
                           uint32_t row_begin, int k, uint64_t* __restrict__ cand, int64_t cand_ld) {
  __shared__ SelectShared sh;
  const int q = blockIdx.y;
  const int s = blockIdx.x;
  const int first = s * seg_len;
  const int m = min(seg_len, chunk_len - first);
  const KeySource src{keys + q * keys_ld + first, row_begin + static_cast<uint32_t>(first)};
  block_select(src, m, k, cand + q * cand_ld + static_cast<int64_t>(1 + s) * k, sh);
}

__global__ void __launch_bounds__(kSelectThreads)
    merge_kernel(const uint64_t* __restrict__ in, int64_t in_ld, int lists, int group, int k,
                 uint64_t* __restrict__ out, int64_t out_ld) {
  __shared__ SelectShared sh;
  const int q = blockIdx.y;
  const int g = blockIdx.x;
  const int first = g * group;
  const int count = min(group, lists - first);
  const uint64_t* src = in + q * in_ld + static_cast<int64_t>(first) * k;
  uint64_t* dst = out + q * out_ld + static_cast<int64_t>(g) * k;
  if (count == 1) {  // a single sorted list: copy
    for (int i = threadIdx.x; i < k; i += kSelectThreads) dst[i] = src[i];
    return;
  }
  block_select(ItemSource{src}, count * k, k, dst, sh);
}

}  // namespace

void launch_select_segments(const uint32_t* keys, int64_t keys_ld, int qb, int chunk_len, int seg_len,
                            int64_t row_begin, int k, uint64_t* cand, int64_t cand_ld, cudaStream_t s) {
  if (qb <= 0 || chunk_len <= 0) return;
  const int nseg = (chunk_len + seg_len - 1) / seg_len;
  select_segments_kernel<<<dim3(nseg, qb), kSelectThreads, 0, s>>>(keys, keys_ld, chunk_len, seg_len,
                                                                   static_cast<uint32_t>(row_begin), k, cand, cand_ld);
  RAGCORE_CUDA_CHECK(cudaGetLastError());
}

void launch_merge(const uint64_t* in, int64_t in_ld, int qb, int lists, int group, int k, uint64_t* out,
                  int64_t out_ld, cudaStream_t s) {
  if (qb <= 0 || lists <= 0) return;
  const int groups = (lists + group - 1) / group;
  merge_kernel<<<dim3(groups, qb), kSelectThreads, 0, s>>>(in, in_ld, lists, group, k, out, out_ld);
  RAGCORE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace ragcore::cuda::detail
