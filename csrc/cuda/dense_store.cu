// The CUDA dense store: device memory, streams and the search driver (chunks of rows scored into a
// key buffer that stays in L2, per-segment top-k, merges with the running top-k of earlier chunks).
// Its small kernels are in store_kernels.cu.
#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>

#include "common.cuh"
#include "ragcore/common.hpp"

namespace ragcore::cuda {

// ================================================================================ public API
using detail::DeviceInfo;

namespace {

// Sets the calling thread's current device for the scope and restores the previous one.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (cudaGetDevice(&prev_) != cudaSuccess) {
      (void)cudaGetLastError();
      prev_ = -1;
    }
    if (prev_ != device) RAGCORE_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceScope() {
    int cur = -1;
    if (prev_ >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != prev_) (void)cudaSetDevice(prev_);
    (void)cudaGetLastError();
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int prev_ = -1;
};

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
int64_t next_pow2(int64_t x) {
  int64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

}  // namespace

StorageType storage_type_from_name(const std::string& name) {
  if (name == "float32") return StorageType::float32;
  if (name == "float16") return StorageType::float16;
  if (name == "bfloat16") return StorageType::bfloat16;
  RAGCORE_THROW_(value_error, "dtype must be 'float32', 'float16' or 'bfloat16', got '" << name << "'");
}

const char* storage_type_name(StorageType t) {
  switch (t) {
    case StorageType::float32:
      return "float32";
    case StorageType::float16:
      return "float16";
    case StorageType::bfloat16:
      return "bfloat16";
  }
  return "?";
}

int device_count() noexcept {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

namespace {
std::string no_device_message() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  (void)cudaGetLastError();
  std::string msg = "no CUDA device is available";
  if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice) {
    msg += " (no NVIDIA driver is loaded, no GPU is visible, or the driver is older than this build's CUDA "
           "runtime " + std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10) +
           "; cudaGetDeviceCount: " + cudaGetErrorString(e) + ")";
  } else if (e != cudaSuccess) {
    msg += std::string(" (cudaGetDeviceCount: ") + cudaGetErrorString(e) + ")";
  }
  return msg;
}

void check_device_index(int device) {
  const int n = device_count();
  if (n == 0) throw cuda_error(no_device_message());
  RAGCORE_CHECK(device >= 0 && device < n,
                "device must be in [0, " << n << ") (" << n << " CUDA device(s)), got " << device);
}
}  // namespace

std::string device_name(int device) {
  check_device_index(device);
  cudaDeviceProp prop;
  RAGCORE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

// ---------------------------------------------------------------------------------- Impl
struct DenseStore::Impl {
  // A grow-only device buffer.
  struct Buffer {
    void* ptr = nullptr;
    size_t bytes = 0;
    template <class T>
    T* as() const {
      return static_cast<T*>(ptr);
    }
  };

  int device = 0;
  int64_t dim = 0, dpad = 0;
  StorageType dtype = StorageType::float32;
  size_t esize = 4;
  DeviceInfo info;
  cudaStream_t stream = nullptr;
  cudaEvent_t last_op = nullptr;  // recorded after every call's GPU work; the next call waits on it

  Buffer vectors;  // (capacity, dpad) in dtype
  Buffer deleted;  // (capacity,) uint8
  int64_t size = 0, capacity = 0;

  // search scratch
  Buffer keys, cand0, cand1, qf, qhi, qlo, inv_scale, host_q, host_idx, host_sc;
  Buffer staging;  // add / to_host / set_deleted
  Buffer skip_rows;  // (size,) uint8: a filtered search's rows left out (its filter | deleted)

  int64_t limit_chunk = 0, limit_segment = 0, limit_query_block = 0;
  mutable std::mutex mu;

  ~Impl() { release(); }

  void release() noexcept {
    if (stream == nullptr && last_op == nullptr) return;
    int prev = -1;
    if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
    if (cudaSetDevice(device) == cudaSuccess) {
      if (stream != nullptr) (void)cudaStreamSynchronize(stream);
      if (last_op != nullptr) (void)cudaEventSynchronize(last_op);
      for (Buffer* b : {&vectors, &deleted, &keys, &cand0, &cand1, &qf, &qhi, &qlo, &inv_scale, &host_q, &host_idx,
                        &host_sc, &staging, &skip_rows})
        if (b->ptr != nullptr) (void)cudaFree(b->ptr);
      if (last_op != nullptr) (void)cudaEventDestroy(last_op);
      if (stream != nullptr) (void)cudaStreamDestroy(stream);
      if (prev >= 0 && prev != device) (void)cudaSetDevice(prev);
    }
    (void)cudaGetLastError();
    stream = nullptr;
    last_op = nullptr;
  }

  // Wait (on the host) until the GPU work of every earlier call is done.
  void host_wait() { RAGCORE_CUDA_CHECK(cudaEventSynchronize(last_op)); }

  // Make `b` hold at least `bytes`. Must run before the current call enqueues GPU work: it may
  // free the old buffer once the earlier calls' work is done.
  void ensure(Buffer& b, size_t bytes) {
    if (b.bytes >= bytes) return;
    if (b.ptr != nullptr) {
      host_wait();
      RAGCORE_CUDA_CHECK(cudaFree(b.ptr));
      b.ptr = nullptr;
      b.bytes = 0;
    }
    const size_t want = std::max<size_t>(bytes, 256);
    RAGCORE_CUDA_CHECK(cudaMalloc(&b.ptr, want));
    b.bytes = want;
  }

  // The GPU work of one call on stream s: it waits for the earlier calls' work, and last_op is recorded
  // after it, by end() or, when the call throws half-way, by the destructor: the work queued before the
  // error still runs, and a later call must not free or reuse its buffers before it has.
  struct Op {
    Impl& m;
    cudaStream_t s;
    bool ended = false;
    Op(Impl& impl, cudaStream_t stream) : m(impl), s(stream) {
      RAGCORE_CUDA_CHECK(cudaStreamWaitEvent(s, m.last_op, 0));
    }
    void end() {
      ended = true;
      RAGCORE_CUDA_CHECK(cudaEventRecord(m.last_op, s));
    }
    ~Op() {
      if (!ended) {
        (void)cudaEventRecord(m.last_op, s);
        (void)cudaGetLastError();  // the error already travels in the exception
      }
    }
    Op(const Op&) = delete;
    Op& operator=(const Op&) = delete;
  };

  size_t row_bytes() const { return static_cast<size_t>(dpad) * esize; }

  void reserve(int64_t rows) {
    if (rows <= capacity) return;
    int64_t cap = std::max<int64_t>({rows, 2 * capacity, 1024});
    cap = std::min<int64_t>(cap, kMaxRows);
    Buffer nv, nd;
    try {
      RAGCORE_CUDA_CHECK(cudaMalloc(&nv.ptr, static_cast<size_t>(cap) * row_bytes()));
      nv.bytes = static_cast<size_t>(cap) * row_bytes();
      RAGCORE_CUDA_CHECK(cudaMalloc(&nd.ptr, static_cast<size_t>(cap)));
      nd.bytes = static_cast<size_t>(cap);
    } catch (...) {
      if (nv.ptr != nullptr) (void)cudaFree(nv.ptr);
      throw;
    }
    try {
      Op op(*this, stream);
      RAGCORE_CUDA_CHECK(cudaMemsetAsync(nd.ptr, 0, nd.bytes, stream));
      if (size > 0) {
        RAGCORE_CUDA_CHECK(cudaMemcpyAsync(nv.ptr, vectors.ptr, static_cast<size_t>(size) * row_bytes(),
                                           cudaMemcpyDeviceToDevice, stream));
        RAGCORE_CUDA_CHECK(
            cudaMemcpyAsync(nd.ptr, deleted.ptr, static_cast<size_t>(size), cudaMemcpyDeviceToDevice, stream));
      }
      op.end();
      host_wait();  // the copies, and every earlier reader of the old buffers, are done
    } catch (...) {  // the old buffers stay; the new ones go once nothing queued uses them
      (void)cudaStreamSynchronize(stream);
      (void)cudaFree(nv.ptr);
      (void)cudaFree(nd.ptr);
      (void)cudaGetLastError();
      throw;
    }
    if (vectors.ptr != nullptr) RAGCORE_CUDA_CHECK(cudaFree(vectors.ptr));
    if (deleted.ptr != nullptr) RAGCORE_CUDA_CHECK(cudaFree(deleted.ptr));
    vectors = nv;
    deleted = nd;
    capacity = cap;
  }

  // ---------------------------------------------------------------------------- search plan
  struct Plan {
    int qb = 1;              // queries per block
    bool gemv = false;       // streaming kernel (few queries) or tiled
    int gemv_nq = 0;         // queries per gemv launch
    int64_t chunk = 0;       // rows scored per chunk
    int64_t segment = 0;     // keys per level-0 select block
    int64_t keys_ld = 0;     // row stride of the key buffer
    int64_t cand_ld = 0;     // row stride of the candidate buffers (items)
  };

  Plan plan(int64_t nq, int64_t k) const {
    Plan p;
    const int gemv_cap = detail::gemv_max_queries(dpad, info);
    p.gemv = nq <= 8 && gemv_cap >= 1;
    p.gemv_nq = gemv_cap;
    p.qb = static_cast<int>(p.gemv ? nq : std::min<int64_t>(nq, 1024));
    if (limit_query_block > 0) p.qb = static_cast<int>(std::min<int64_t>(p.qb, limit_query_block));
    p.qb = std::max(p.qb, 1);
    // The key buffer (qb x chunk uint32) is sized to stay in L2 between the scoring and the select.
    const int64_t budget =
        std::clamp<int64_t>(static_cast<int64_t>(info.l2_bytes) * 5 / 8, int64_t{8} << 20, int64_t{64} << 20);
    int64_t chunk = std::max<int64_t>(budget / (4 * static_cast<int64_t>(p.qb)), 4096);
    chunk = std::min(chunk, round_up(std::max<int64_t>(size, 1), detail::kGemmRowTile));
    if (limit_chunk > 0) chunk = limit_chunk;
    chunk = std::min<int64_t>(chunk, detail::kGemmMaxRows);
    p.chunk = chunk;
    // Segments: enough select blocks to fill the GPU, each several times k long.
    const int64_t kp = next_pow2(k);
    int64_t seg = (chunk * p.qb + 2 * info.num_sms - 1) / (2 * info.num_sms);
    seg = std::max<int64_t>(seg, std::max<int64_t>(4096, 8 * kp));
    seg = round_up(seg, 256);
    if (limit_segment > 0) seg = limit_segment;
    seg = std::min(seg, chunk);
    p.segment = seg;
    const int64_t nseg = (chunk + seg - 1) / seg;
    p.keys_ld = round_up(chunk, detail::kGemmRowTile);
    p.cand_ld = (1 + nseg) * k;
    return p;
  }

  void ensure_scratch(const Plan& p, int64_t k, bool host_io) {
    const size_t qb = static_cast<size_t>(p.qb);
    ensure(keys, qb * static_cast<size_t>(p.keys_ld) * sizeof(uint32_t));
    ensure(cand0, qb * static_cast<size_t>(p.cand_ld) * sizeof(uint64_t));
    ensure(cand1, qb * static_cast<size_t>(p.cand_ld) * sizeof(uint64_t));
    const bool tc = !p.gemv && dtype != StorageType::float32;
    if (!tc) ensure(qf, qb * static_cast<size_t>(dpad) * sizeof(float));
    if (tc) {
      ensure(qhi, qb * static_cast<size_t>(dpad) * esize);
      ensure(qlo, qb * static_cast<size_t>(dpad) * esize);
      ensure(inv_scale, qb * sizeof(float));
    }
    if (host_io) {
      ensure(host_q, qb * static_cast<size_t>(dim) * sizeof(float));
      ensure(host_idx, qb * static_cast<size_t>(k) * sizeof(int64_t));
      ensure(host_sc, qb * static_cast<size_t>(k) * sizeof(float));
    }
  }

  // The rows a search leaves out, on the device: the tombstones, or with a host filter `skip` ((size,)
  // uint8, nonzero = leave out; checked by the caller) the filter's rows joined with them in skip_rows
  // (made large enough before the call's Op). Enqueued on s; the host buffer may go when this returns.
  const uint8_t* excluded_rows(const uint8_t* skip, cudaStream_t s) {
    if (skip == nullptr || size == 0) return deleted.as<uint8_t>();
    RAGCORE_CUDA_CHECK(cudaMemcpyAsync(skip_rows.ptr, skip, static_cast<size_t>(size), cudaMemcpyHostToDevice, s));
    detail::launch_or_mask(deleted.as<uint8_t>(), size, skip_rows.as<uint8_t>(), s);
    return skip_rows.as<uint8_t>();
  }

  // Top-k of qb queries (device, (qb, dim)) into device indices / scores (qb, k), on stream s, leaving out
  // the rows with del[row] != 0.
  void search_block(const Plan& p, const float* dq, int qb, int k, int64_t* d_idx, float* d_sc, const uint8_t* del,
                    cudaStream_t s) {
    const bool tc = !p.gemv && dtype != StorageType::float32;
    detail::launch_prep_queries(dtype, dq, qb, dim, dpad, tc ? nullptr : qf.as<float>(), tc ? qhi.ptr : nullptr,
                                tc ? qlo.ptr : nullptr, tc ? inv_scale.as<float>() : nullptr, s);
    uint64_t* cur = cand0.as<uint64_t>();
    uint64_t* other = cand1.as<uint64_t>();
    // slot 0 of each query: the running top-k, empty at first
    RAGCORE_CUDA_CHECK(cudaMemset2DAsync(cur, static_cast<size_t>(p.cand_ld) * sizeof(uint64_t), 0,
                                         static_cast<size_t>(k) * sizeof(uint64_t), static_cast<size_t>(qb), s));
    uint32_t* kb = keys.as<uint32_t>();
    for (int64_t c0 = 0; c0 < size; c0 += p.chunk) {
      const int len = static_cast<int>(std::min<int64_t>(p.chunk, size - c0));
      if (p.gemv) {
        for (int q0 = 0; q0 < qb; q0 += p.gemv_nq) {
          const int nq = std::min(p.gemv_nq, qb - q0);
          detail::launch_gemv(dtype, vectors.ptr, c0, len, dpad, qf.as<float>() + static_cast<int64_t>(q0) * dpad, nq,
                              del, kb + q0 * p.keys_ld, p.keys_ld, info, s);
        }
      } else {
        detail::launch_gemm(dtype, qf.as<float>(), qhi.ptr, qlo.ptr, inv_scale.as<float>(), qb, vectors.ptr, c0, len,
                            dpad, del, kb, p.keys_ld, s);
      }
      const int seg = static_cast<int>(p.segment);
      const int nseg = (len + seg - 1) / seg;
      detail::launch_select_segments(kb, p.keys_ld, qb, len, seg, c0, k, cur, p.cand_ld, s);
      int lists = 1 + nseg;
      while (lists > 1) {
        detail::launch_merge(cur, p.cand_ld, qb, lists, detail::kMergeGroup, k, other, p.cand_ld, s);
        std::swap(cur, other);
        lists = (lists + detail::kMergeGroup - 1) / detail::kMergeGroup;
      }
    }
    detail::launch_finalize(cur, p.cand_ld, qb, k, d_idx, d_sc, s);
  }
};

// ------------------------------------------------------------------------------ DenseStore
DenseStore::DenseStore(int64_t dim, StorageType dtype, int device) : impl_(std::make_unique<Impl>()) {
  RAGCORE_CHECK(dim >= 1, "dim must be >= 1, got " << dim);
  RAGCORE_CHECK(dim <= (int64_t{1} << 24), "dim must be <= " << (int64_t{1} << 24) << ", got " << dim);
  check_device_index(device);
  Impl& m = *impl_;
  m.device = device;
  m.dim = dim;
  m.dtype = dtype;
  m.esize = detail::element_size(dtype);
  m.dpad = round_up(dim, detail::elements_per_16b(dtype));
  DeviceScope scope(device);
  cudaDeviceProp prop;
  RAGCORE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  if (prop.major < 8)
    throw cuda_error("ragcore's CUDA kernels need compute capability >= 8.0 (Ampere or newer); device " +
                     std::to_string(device) + " (" + prop.name + ") is " + std::to_string(prop.major) + "." +
                     std::to_string(prop.minor));
  m.info.device = device;
  m.info.num_sms = std::max(1, prop.multiProcessorCount);
  int optin = 0;
  RAGCORE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  m.info.smem_optin = static_cast<size_t>(std::max(optin, 48 * 1024));
  m.info.l2_bytes = static_cast<size_t>(std::max(prop.l2CacheSize, 0));
  try {
    RAGCORE_CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
    RAGCORE_CUDA_CHECK(cudaEventCreateWithFlags(&m.last_op, cudaEventDisableTiming));
    RAGCORE_CUDA_CHECK(cudaEventRecord(m.last_op, m.stream));
  } catch (...) {
    m.release();
    throw;
  }
}

DenseStore::~DenseStore() = default;

void DenseStore::add(const float* vectors, int64_t n) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  RAGCORE_CHECK(n >= 0, "n must be >= 0, got " << n);
  if (n == 0) return;
  RAGCORE_CHECK(n <= kMaxRows - m.size,
                "a CUDA DenseStore holds at most " << kMaxRows << " rows; it has " << m.size << ", adding " << n);
  DeviceScope scope(m.device);
  const int64_t batch = std::max<int64_t>(1, (int64_t{64} << 20) / (m.dim * 4));  // rows per 64 MiB staging
  m.ensure(m.staging, static_cast<size_t>(std::min(batch, n) * m.dim) * sizeof(float));
  m.reserve(m.size + n);
  Impl::Op op(m, m.stream);
  for (int64_t r0 = 0; r0 < n; r0 += batch) {
    const int64_t rows = std::min(batch, n - r0);
    RAGCORE_CUDA_CHECK(cudaMemcpyAsync(m.staging.ptr, vectors + r0 * m.dim, static_cast<size_t>(rows * m.dim) * sizeof(float),
                                       cudaMemcpyHostToDevice, m.stream));
    void* dst = static_cast<char*>(m.vectors.ptr) + static_cast<size_t>(m.size + r0) * m.row_bytes();
    detail::launch_store_rows(m.dtype, m.staging.as<float>(), rows, m.dim, m.dpad, dst, m.stream);
  }
  op.end();
  RAGCORE_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  m.size += n;
}

void DenseStore::set_deleted(const int64_t* indices, int64_t m_count) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  RAGCORE_CHECK(m_count >= 0, "the number of indices must be >= 0, got " << m_count);
  for (int64_t i = 0; i < m_count; ++i)
    RAGCORE_CHECK_INDEX(indices[i] >= 0 && indices[i] < m.size,
                        "index " << indices[i] << " (position " << i << ") is out of range for a store of "
                                 << m.size << " rows");
  if (m_count == 0) return;
  DeviceScope scope(m.device);
  const int64_t batch = int64_t{8} << 20;
  m.ensure(m.staging, static_cast<size_t>(std::min(batch, m_count)) * sizeof(int64_t));
  Impl::Op op(m, m.stream);
  for (int64_t i0 = 0; i0 < m_count; i0 += batch) {
    const int64_t cnt = std::min(batch, m_count - i0);
    RAGCORE_CUDA_CHECK(cudaMemcpyAsync(m.staging.ptr, indices + i0, static_cast<size_t>(cnt) * sizeof(int64_t),
                                       cudaMemcpyHostToDevice, m.stream));
    detail::launch_mark_deleted(m.staging.as<int64_t>(), cnt, m.deleted.as<uint8_t>(), m.stream);
  }
  op.end();
  RAGCORE_CUDA_CHECK(cudaStreamSynchronize(m.stream));
}

namespace {
void check_k(int64_t k) {
  RAGCORE_CHECK(k >= 1, "k must be >= 1, got " << k);
  RAGCORE_CHECK(k <= kMaxK, "k must be <= " << kMaxK << " for the GPU top-k select, got " << k);
}

void check_skip(const uint8_t* skip, int64_t skip_len, int64_t size) {
  RAGCORE_CHECK(skip == nullptr || skip_len == size,
                "skip must have one entry per stored row (" << size << "), got " << skip_len);
}
}  // namespace

void DenseStore::search(const float* queries, int64_t nq, int64_t k, int64_t* indices, float* scores,
                        const uint8_t* skip, int64_t skip_len) {
  check_k(k);
  RAGCORE_CHECK(nq >= 0, "nq must be >= 0, got " << nq);
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  check_skip(skip, skip_len, m.size);
  if (nq == 0) return;
  DeviceScope scope(m.device);
  const Impl::Plan p = m.plan(nq, k);
  m.ensure_scratch(p, k, /*host_io=*/true);
  if (skip != nullptr) m.ensure(m.skip_rows, static_cast<size_t>(m.size));
  cudaStream_t s = m.stream;
  Impl::Op op(m, s);
  const uint8_t* del = m.excluded_rows(skip, s);
  for (int64_t q0 = 0; q0 < nq; q0 += p.qb) {
    const int qb = static_cast<int>(std::min<int64_t>(p.qb, nq - q0));
    RAGCORE_CUDA_CHECK(cudaMemcpyAsync(m.host_q.ptr, queries + q0 * m.dim, static_cast<size_t>(qb * m.dim) * sizeof(float),
                                       cudaMemcpyHostToDevice, s));
    m.search_block(p, m.host_q.as<float>(), qb, static_cast<int>(k), m.host_idx.as<int64_t>(), m.host_sc.as<float>(),
                   del, s);
    RAGCORE_CUDA_CHECK(cudaMemcpyAsync(indices + q0 * k, m.host_idx.ptr, static_cast<size_t>(qb * k) * sizeof(int64_t),
                                       cudaMemcpyDeviceToHost, s));
    RAGCORE_CUDA_CHECK(cudaMemcpyAsync(scores + q0 * k, m.host_sc.ptr, static_cast<size_t>(qb * k) * sizeof(float),
                                       cudaMemcpyDeviceToHost, s));
  }
  op.end();
  RAGCORE_CUDA_CHECK(cudaStreamSynchronize(s));
}

namespace {
void check_device_pointer(const void* p, int device, const char* what, size_t align) {
  RAGCORE_CHECK(p != nullptr, what << " is a null pointer");
  RAGCORE_CHECK(reinterpret_cast<std::uintptr_t>(p) % align == 0,
                what << " must be aligned to " << align << " bytes, got 0x" << std::hex
                     << reinterpret_cast<std::uintptr_t>(p));
  cudaPointerAttributes attr;
  const cudaError_t e = cudaPointerGetAttributes(&attr, p);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    RAGCORE_THROW_(value_error, what << " is not a CUDA pointer (" << cudaGetErrorString(e) << ")");
  }
  const bool ok = (attr.type == cudaMemoryTypeDevice && attr.device == device) || attr.type == cudaMemoryTypeManaged;
  RAGCORE_CHECK(ok, what << " must point to device memory on CUDA device " << device << ", got "
                         << (attr.type == cudaMemoryTypeHost           ? "pinned host memory"
                             : attr.type == cudaMemoryTypeUnregistered ? "host memory"
                             : attr.type == cudaMemoryTypeDevice       ? "memory of device " + std::to_string(attr.device)
                                                                       : "unknown memory"));
}
}  // namespace

void DenseStore::search_device(const float* queries, int64_t nq, int64_t k, int64_t* indices, float* scores,
                               std::uintptr_t stream, const uint8_t* skip, int64_t skip_len) {
  check_k(k);
  RAGCORE_CHECK(nq >= 0, "nq must be >= 0, got " << nq);
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  check_skip(skip, skip_len, m.size);
  if (nq == 0) return;
  DeviceScope scope(m.device);
  check_device_pointer(queries, m.device, "queries_ptr", alignof(float));
  check_device_pointer(indices, m.device, "out_indices_ptr", alignof(int64_t));
  check_device_pointer(scores, m.device, "out_scores_ptr", alignof(float));
  const Impl::Plan p = m.plan(nq, k);
  m.ensure_scratch(p, k, /*host_io=*/false);
  if (skip != nullptr) m.ensure(m.skip_rows, static_cast<size_t>(m.size));
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  Impl::Op op(m, s);
  const uint8_t* del = m.excluded_rows(skip, s);
  for (int64_t q0 = 0; q0 < nq; q0 += p.qb) {
    const int qb = static_cast<int>(std::min<int64_t>(p.qb, nq - q0));
    m.search_block(p, queries + q0 * m.dim, qb, static_cast<int>(k), indices + q0 * k, scores + q0 * k, del, s);
  }
  op.end();
}

int64_t DenseStore::to_host(float* out, int64_t rows) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  const int64_t n = std::min(std::max<int64_t>(rows, 0), m.size);
  if (n == 0) return 0;
  DeviceScope scope(m.device);
  const int64_t batch = std::max<int64_t>(1, (int64_t{64} << 20) / (m.dim * 4));
  m.ensure(m.staging, static_cast<size_t>(std::min(batch, n) * m.dim) * sizeof(float));
  Impl::Op op(m, m.stream);
  for (int64_t r0 = 0; r0 < n; r0 += batch) {
    const int64_t cnt = std::min(batch, n - r0);
    const void* src = static_cast<const char*>(m.vectors.ptr) + static_cast<size_t>(r0) * m.row_bytes();
    detail::launch_load_rows(m.dtype, src, cnt, m.dim, m.dpad, m.staging.as<float>(), m.stream);
    RAGCORE_CUDA_CHECK(cudaMemcpyAsync(out + r0 * m.dim, m.staging.ptr, static_cast<size_t>(cnt * m.dim) * sizeof(float),
                                       cudaMemcpyDeviceToHost, m.stream));
  }
  op.end();
  RAGCORE_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  return n;
}

int64_t DenseStore::size() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->size;
}
int64_t DenseStore::dim() const { return impl_->dim; }
StorageType DenseStore::dtype() const { return impl_->dtype; }
int DenseStore::device() const { return impl_->device; }

void DenseStore::set_limits(int64_t chunk_rows, int64_t segment_rows, int64_t query_block) {
  RAGCORE_CHECK(chunk_rows >= 0 && segment_rows >= 0 && query_block >= 0,
                "limits must be >= 0 (0 = automatic), got " << chunk_rows << ", " << segment_rows << ", "
                                                            << query_block);
  RAGCORE_CHECK(query_block <= 65535, "query_block must be <= 65535, got " << query_block);
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->limit_chunk = chunk_rows;
  impl_->limit_segment = segment_rows;
  impl_->limit_query_block = query_block;
}

}  // namespace ragcore::cuda
