// The top-k selector shared by sparse and dense search: keeps the k best (score, index) pairs,
// best = higher score, ties broken by the lower index, so results are deterministic everywhere.
//
// Candidates below the running threshold are rejected with one compare. For small k the held items
// stay sorted (insertion into at most 32 items: the threshold is always exact); for larger k they
// go to a buffer of up to 2k items which, when full, is cut back to its best k by nth_element
// (amortised O(1) per accepted candidate, cheaper than a heap for k in the hundreds).
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace ragcore {

class TopK {
 public:
  explicit TopK(size_t k) : k_(k), cap_(std::max<size_t>(2 * k, 32)), small_(k <= kSmall) {
    buf_.reserve(std::min<size_t>(cap_, 8192));
  }

  void reset() {
    buf_.clear();
    thr_ = -std::numeric_limits<float>::infinity();
  }
  size_t k() const { return k_; }

  /// Lowest score that can still enter (-inf until k items are held): a candidate with a lower
  /// score is certainly not in the top-k.
  float threshold() const { return thr_; }

  /// Make threshold() exact: the k-th best score held (when k are held).
  void tighten() {
    if (!small_ && buf_.size() >= k_) compact();
  }

  inline void push(float score, int64_t index) {
    if (score < thr_) return;
    if (small_) {
      const Item x{score, index};
      size_t n = buf_.size();
      if (n == k_) {
        if (!better(x, buf_[n - 1])) return;
        --n;
      } else {
        buf_.push_back(x);
      }
      while (n > 0 && better(x, buf_[n - 1])) {
        buf_[n] = buf_[n - 1];
        --n;
      }
      buf_[n] = x;
      if (buf_.size() == k_) thr_ = buf_.back().score;
      return;
    }
    buf_.push_back({score, index});
    if (buf_.size() >= cap_) compact();
  }

  /// Visit the held items (score, index), in no particular order.
  template <class F>
  void for_each(F&& f) const {
    for (const Item& it : buf_) f(it.score, it.index);
  }

  /// Write the k results best first: indices (k,) and scores (k,), padded with -1 / -inf.
  void write(int64_t* indices, float* scores) {
    if (!small_ && buf_.size() > k_) {
      std::nth_element(buf_.begin(), buf_.begin() + k_, buf_.end(), better);
      buf_.resize(k_);
    }
    if (!small_) std::sort(buf_.begin(), buf_.end(), better);
    size_t i = 0;
    for (; i < buf_.size(); ++i) {
      indices[i] = buf_[i].index;
      scores[i] = buf_[i].score;
    }
    for (; i < k_; ++i) {
      indices[i] = -1;
      scores[i] = -std::numeric_limits<float>::infinity();
    }
  }

 private:
  struct Item {
    float score;
    int64_t index;
  };
  static inline bool better(const Item& a, const Item& b) {
    return a.score > b.score || (a.score == b.score && a.index < b.index);
  }
  void compact() {
    // keep the best k; the k-th best score becomes the threshold (items equal to it may still
    // enter: a lower index wins the tie)
    std::nth_element(buf_.begin(), buf_.begin() + (k_ - 1), buf_.end(), better);
    thr_ = buf_[k_ - 1].score;
    buf_.resize(k_);
  }
  static constexpr size_t kSmall = 32;
  size_t k_, cap_;
  bool small_;
  std::vector<Item> buf_;
  float thr_ = -std::numeric_limits<float>::infinity();
};

}  // namespace ragcore
