// Validation of a dense collection loaded from disk: the values add() would have refused (NaN or
// infinite rows) and side arrays whose values the scan's error bounds rely on. One pass over the rows,
// branch-free within a row, split over threads; the offending row is named.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "ragcore/common.hpp"
#include "ragcore/dense.hpp"
#include "ragcore/parallel.hpp"

namespace ragcore::dense {

namespace {

// Whether row r is valid (false: the caller reports it with check_row(..., true)).
// |x| <= limit on the bits: with the sign cleared, a float's (or half's) bits order like its magnitude,
// and NaN and infinities lie above every finite limit, so one unsigned compare checks both.
bool check_row(const Collection& c, int64_t r, bool report, const RowBound& bound) {
  const size_t dim = static_cast<size_t>(c.dim);
  uint32_t ok = 1;
  if (c.dtype == DType::f32) {
    uint32_t limit;
    std::memcpy(&limit, &bound.max_abs, sizeof limit);
    const uint32_t* x = static_cast<const uint32_t*>(c.data) + static_cast<size_t>(r) * dim;
    for (size_t d = 0; d < dim; ++d) ok &= static_cast<uint32_t>((x[d] & 0x7FFFFFFFu) <= limit);
    RAGCORE_CHECK(ok || !report, "corrupt index: vectors row " << r << " has a NaN, infinite or out-of-range value "
                                                               "(|x| above " << bound.max_abs << ")");
  } else if (c.dtype == DType::f16) {
    const uint16_t* x = static_cast<const uint16_t*>(c.data) + static_cast<size_t>(r) * dim;
    for (size_t d = 0; d < dim; ++d) ok &= static_cast<uint32_t>((x[d] & 0x7FFFu) <= bound.max_abs_f16);
    RAGCORE_CHECK(ok || !report, "corrupt index: vectors row " << r << " has a NaN, infinite or out-of-range value "
                                                               "(|x| above " << bound.max_abs << ")");
  } else {
    // int8 rows: codes in [-127, 127] and aux (scale, L1): the scan's bound uses the L1 norm of the codes
    const int8_t* x = static_cast<const int8_t*>(c.data) + static_cast<size_t>(r) * dim;
    int64_t l1 = 0;  // int32 would overflow past ~16.9M dimensions
    for (size_t d = 0; d < dim; ++d) {
      ok &= static_cast<uint32_t>(x[d] != -128);
      l1 += x[d] < 0 ? -x[d] : x[d];
    }
    RAGCORE_CHECK(ok || !report, "corrupt index: vectors row " << r << " holds -128, expected int8 codes in [-127, 127]");
    const float scale = c.aux[2 * r], l1s = c.aux[2 * r + 1];
    const bool scale_ok = scale > 0.0f && scale <= bound.max_abs / 127.0f, l1_ok = l1s == static_cast<float>(l1);
    RAGCORE_CHECK(scale_ok || !report, "corrupt index: aux row " << r << " has scale " << scale
                                                                 << ", expected a value > 0 and <= "
                                                                 << bound.max_abs / 127.0f);
    RAGCORE_CHECK(l1_ok || !report, "corrupt index: aux row " << r << " has L1 norm " << l1s << ", expected " << l1
                                                              << " (the sum of the row's |codes|)");
    ok &= static_cast<uint32_t>(scale_ok && l1_ok);
  }
  if (c.pre) {  // prefilter aux (scale, scale * L1 / 2, L2(scale * codes), L2(residual)): finite, >= 0, scale > 0
    const float* a = c.pre_aux + 4 * r;
    bool aok = a[0] > 0.0f;
    for (int j = 0; j < 4; ++j) aok &= (a[j] >= 0.0f) & (a[j] <= FLT_MAX);
    RAGCORE_CHECK(aok || !report, "corrupt index: pre_aux row " << r << " is (" << a[0] << ", " << a[1] << ", " << a[2]
                                                                << ", " << a[3]
                                                                << "), expected finite values >= 0 and a scale > 0");
    ok &= static_cast<uint32_t>(aok);
  }
  return ok != 0;
}

}  // namespace

void validate_collection(const Collection& c, int threads, RowBound bound) {
  RAGCORE_CHECK(c.n >= 0 && c.dim >= 0, "corrupt index: shape (" << c.n << ", " << c.dim << ")");
  RAGCORE_CHECK(c.dtype != DType::i8 || c.aux || c.n == 0, "int8 vectors need their (n, 2) float32 scales");
  constexpr size_t kRows = 4096;
  std::vector<int64_t> first_bad(static_cast<size_t>(std::max(threads, 1)), c.n);
  parallel_for(static_cast<size_t>(c.n), std::max(threads, 1), kRows, [&](int w, size_t b, size_t e) {
    for (size_t r = b; r < e; ++r) {
      if (!check_row(c, static_cast<int64_t>(r), false, bound)) {
        first_bad[static_cast<size_t>(w)] = std::min(first_bad[static_cast<size_t>(w)], static_cast<int64_t>(r));
        return;
      }
    }
  });
  const int64_t bad = *std::min_element(first_bad.begin(), first_bad.end());
  if (bad < c.n) check_row(c, bad, true, bound);
}

}  // namespace ragcore::dense
