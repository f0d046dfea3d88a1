// Dense kernels, portable C++: the reference set, and what runs on CPUs without AVX2 (or other than
// x86-64). See dense_kernels.hpp for the table these fill.
#include "dense_kernels.hpp"

namespace ragcore::dense::detail {

void scores_f32_scalar(const float* q, const float* X, int64_t nr, int dim, float* out) {
  for (int64_t r = 0; r < nr; ++r) {
    const float* x = X + r * dim;
    float s = 0.f;
    for (int d = 0; d < dim; ++d) s += q[d] * x[d];
    out[r] = s;
  }
}
void scores_f16_scalar(const float* q, const uint16_t* X, int64_t nr, int dim, float* out) {
  for (int64_t r = 0; r < nr; ++r) {
    const uint16_t* x = X + r * dim;
    float s = 0.f;
    for (int d = 0; d < dim; ++d) s += q[d] * half_to_float(x[d]);
    out[r] = s;
  }
}
void dots_i8_scalar(const int8_t* qq, const int8_t* X, int64_t nr, int dim, int32_t* out) {
  for (int64_t r = 0; r < nr; ++r) {
    const int8_t* x = X + r * dim;
    int32_t s = 0;
    for (int d = 0; d < dim; ++d) s += static_cast<int32_t>(qq[d]) * x[d];
    out[r] = s;
  }
}
float dot_f32_i8_scalar(const float* q, const int8_t* x, int dim) {
  float s = 0.f;
  for (int d = 0; d < dim; ++d) s += q[d] * static_cast<float>(x[d]);
  return s;
}
void pack_scalar(const float* X, int64_t nr, int dim, float* P) {
  const int64_t np = (nr + kPanel - 1) / kPanel;
  for (int64_t p = 0; p < np; ++p) {
    float* o = P + p * kPanel * dim;
    for (int j = 0; j < kPanel; ++j) {
      const int64_t r = p * kPanel + j;
      for (int d = 0; d < dim; ++d) o[static_cast<int64_t>(d) * kPanel + j] = r < nr ? X[r * dim + d] : 0.f;
    }
  }
}
constexpr int kScalarTileQ = 4;
void tile_f32_scalar(const float* Qp, int nq, const float* P, int np, int dim, float* out, int64_t ldo) {
  for (int i = 0; i < nq; ++i)
    for (int p = 0; p < np; ++p) {
      float acc[kPanel] = {};
      const float* panel = P + static_cast<int64_t>(p) * kPanel * dim;
      for (int d = 0; d < dim; ++d)
        for (int j = 0; j < kPanel; ++j) acc[j] += Qp[static_cast<int64_t>(d) * kScalarTileQ + i] * panel[d * kPanel + j];
      for (int j = 0; j < kPanel; ++j) out[i * ldo + p * kPanel + j] = acc[j];
    }
}
void f16_to_f32_scalar(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
}
void i8_to_f32_scalar(const int8_t* src, const float* aux, int64_t rows, int dim, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const float s = aux[2 * r];
    for (int d = 0; d < dim; ++d) dst[r * dim + d] = s * static_cast<float>(src[r * dim + d]);
  }
}
int filter_ge_scalar(const float* s, int n, float thr, int* pos) {
  int c = 0;
  for (int p = 0; p < n; ++p) {
    pos[c] = p;
    c += s[p] >= thr;
  }
  return c;
}

const Kernels kScalar = {"scalar",         scores_f32_scalar, scores_f16_scalar, dots_i8_scalar,
                         dot_f32_i8_scalar, pack_scalar,       kScalarTileQ,      tile_f32_scalar,
                         f16_to_f32_scalar, i8_to_f32_scalar,  filter_ge_scalar};

}  // namespace ragcore::dense::detail
