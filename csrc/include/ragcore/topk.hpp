// The top-k selector shared by sparse and dense search: keeps the k best (score, index) pairs,
// best = higher score, ties broken by the lower index, so results are deterministic everywhere.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace ragcore {

class TopK {
 public:
  explicit TopK(size_t k) : k_(k) { heap_.reserve(std::min<size_t>(k, 4096)); }

  void reset() {
    heap_.clear();
    thr_ = -std::numeric_limits<float>::infinity();
  }
  size_t k() const { return k_; }

  /// Lowest score that can still enter (-inf until k items are held).
  float threshold() const { return thr_; }

  inline void push(float score, int64_t index) {
    if (score < thr_) return;  // the common case once the heap is full: one compare
    if (heap_.size() < k_) {
      heap_.push_back({score, index});
      std::push_heap(heap_.begin(), heap_.end(), better);
      if (heap_.size() == k_) thr_ = heap_.front().score;
    } else if (better({score, index}, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), better);
      heap_.back() = {score, index};
      std::push_heap(heap_.begin(), heap_.end(), better);
      thr_ = heap_.front().score;
    }
  }

  /// Write the k results best first: indices (k,) and scores (k,), padded with -1 / -inf.
  void write(int64_t* indices, float* scores) {
    std::sort(heap_.begin(), heap_.end(), better);
    size_t i = 0;
    for (; i < heap_.size(); ++i) {
      indices[i] = heap_[i].index;
      scores[i] = heap_[i].score;
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
  // a "better" than b; as a heap comparator this keeps the worst item at the front.
  static bool better(const Item& a, const Item& b) {
    return a.score > b.score || (a.score == b.score && a.index < b.index);
  }
  size_t k_;
  std::vector<Item> heap_;
  float thr_ = -std::numeric_limits<float>::infinity();  // score of the worst held item once full
};

}  // namespace ragcore
