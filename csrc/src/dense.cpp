// Dense top-k search: the entry points of dense.hpp. search_path chooses the driver (the scan for few
// queries, dense_scan.cpp; batches by tiles, dense_blocked.cpp) and the kernels in use
// (dense_dispatch.cpp) do the arithmetic (dense_scalar.cpp, dense_avx2.cpp, dense_avx512.cpp,
// dense_amx.cpp). See dense.hpp for the design, dense_kernels.hpp for the kernel table.
#include "ragcore/dense.hpp"

#include <algorithm>
#include <cmath>

#include "dense_drivers.hpp"
#include "ragcore/common.hpp"
#include "ragcore/parallel.hpp"

namespace ragcore::dense {

namespace detail {

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

}  // namespace detail

void search(const Collection& c, const float* queries, int64_t nq, int k, int threads, int64_t* out_idx,
            float* out_scores) {
  detail::search_path(c, queries, nq, k, threads, 0, out_idx, out_scores);
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

}  // namespace ragcore::dense
