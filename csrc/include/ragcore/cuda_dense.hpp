// The CUDA dense store (issue 4): vectors held on one GPU in float32, float16 or bfloat16, exact
// top-k inner-product search. Plain C++ with no CUDA types, so that the pybind11 glue
// (csrc/cuda_bindings/) compiles with the host compiler alone; the kernels live in csrc/cuda/.
//
// Semantics are those of the CPU path: score = inner product of the float32 query with the stored
// row (stored float16/bfloat16 converted to float, float32 accumulation); results best first; ties
// broken by the lower row index; tombstoned rows are never returned; when fewer than k live rows
// exist the tail is padded with index -1 and score -inf. A NaN score ranks below every number
// (like numpy's argsort of -scores); -0.0 and +0.0 are the same score.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace ragcore::cuda {

/// A failed CUDA runtime call (becomes RuntimeError in Python); what() carries the call, the
/// cudaGetErrorString text and where it happened.
struct cuda_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// How the rows are held on the device.
enum class StorageType { float32, float16, bfloat16 };

/// "float32" | "float16" | "bfloat16" -> StorageType (value_error naming the value otherwise).
StorageType storage_type_from_name(const std::string& name);
/// StorageType -> its numpy name.
const char* storage_type_name(StorageType t);

/// Number of CUDA devices: 0 when there is no driver or no device. Never throws.
int device_count() noexcept;
/// Name of CUDA device `device` (value_error when out of range, cuda_error without a device).
std::string device_name(int device);

/// The largest k of the GPU top-k select.
inline constexpr int64_t kMaxK = 1024;
/// The most rows one store holds (row ids are 32-bit on the device).
inline constexpr int64_t kMaxRows = 2147483647;

/// Rows on one GPU plus a tombstone flag per row. Thread-safe: every method takes the store's lock,
/// so calls from several threads are serialised (the GPU work of one call runs after the previous
/// call's). Device memory grows by reallocation, doubling the capacity.
class DenseStore {
 public:
  /// dim >= 1; `device` in [0, device_count()). Throws cuda_error when there is no usable GPU.
  DenseStore(int64_t dim, StorageType dtype, int device);
  ~DenseStore();
  DenseStore(const DenseStore&) = delete;
  DenseStore& operator=(const DenseStore&) = delete;

  /// Append n rows: `vectors` is host float32 (n, dim), row-major. Rows get ids size() .. size()+n-1.
  void add(const float* vectors, int64_t n);

  /// Tombstone rows: `indices` is host int64 (m,), each in [0, size()) (index_error otherwise).
  void set_deleted(const int64_t* indices, int64_t m);

  /// Exact top-k: host float32 queries (nq, dim) -> host int64 indices (nq, k) and float32 scores
  /// (nq, k), best first. 1 <= k <= kMaxK. Synchronous. `skip` (optional): host uint8 (skip_len,),
  /// skip_len == size(), nonzero = leave the row out of this search too (a filter; the tombstoned
  /// rows are left out regardless).
  void search(const float* queries, int64_t nq, int64_t k, int64_t* indices, float* scores,
              const uint8_t* skip = nullptr, int64_t skip_len = 0);

  /// As search(), with device pointers: queries float32 (nq, dim), indices int64 (nq, k), scores
  /// float32 (nq, k), all row-major on this store's device. Enqueued on `stream` (a cudaStream_t
  /// given as an integer; 0 = the legacy default stream) and asynchronous: the outputs are ready
  /// when that stream reaches this point. Ordered after every earlier call on this store. `skip` as
  /// in search() (still host memory: copied before this returns, which waits for `stream`).
  void search_device(const float* queries, int64_t nq, int64_t k, int64_t* indices, float* scores,
                     std::uintptr_t stream, const uint8_t* skip = nullptr, int64_t skip_len = 0);

  /// Copy the first min(rows, size()) rows back as float32 into host `out` (rows, dim); returns
  /// the number of rows written.
  int64_t to_host(float* out, int64_t rows);

  int64_t size() const;  ///< rows stored, tombstoned ones included
  int64_t dim() const;
  StorageType dtype() const;
  int device() const;

  /// Testing knobs (0 = automatic): rows scored per chunk, rows per select segment, queries per
  /// block. Small values exercise the chunk merge and the multi-level segment merge on small data.
  void set_limits(int64_t chunk_rows, int64_t segment_rows, int64_t query_block);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ragcore::cuda
