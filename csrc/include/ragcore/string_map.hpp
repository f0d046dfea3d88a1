// An insert-only open-addressing hash map from byte strings to dense ids 0..size-1, with the keys
// kept in one arena (so a vocabulary saves and loads as two flat arrays). Lookups take string_view.
#pragma once
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "ragcore/common.hpp"

namespace ragcore {

inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  if (n) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 29;
  }
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 32;
  return h;
}

class StringMap {
 public:
  StringMap() { rehash(64); }

  /// Rebuild from a saved arena: keys are data[offsets[i], offsets[i+1]), i in [0, n); the offsets
  /// must be valid (validate_sparse_arrays). Raises value_error "corrupt index: <what> holds ... twice"
  /// when a key repeats (a saved map is a set: the second copy would be unreachable).
  StringMap(const char* data, const int64_t* offsets, size_t n, const char* what = "keys") {
    arena_.assign(data, data + (n ? offsets[n] : 0));
    offsets_.assign(offsets, offsets + n + 1);
    if (n == 0) offsets_.assign(1, 0);
    hashes_.resize(n);
    for (size_t i = 0; i < n; ++i) hashes_[i] = hash_bytes(data + offsets[i], offsets[i + 1] - offsets[i]);
    size_t cap = 64;
    while (cap < 2 * n) cap <<= 1;
    slots_.assign(cap, Slot{0, 0, -1});
    mask_ = cap - 1;
    for (size_t i = 0; i < n; ++i) {
      const int32_t dup = place(hashes_[i], static_cast<int32_t>(i), true);
      RAGCORE_CHECK(dup < 0, "corrupt index: " << what << " holds the key of entry " << dup << " again at entry " << i
                                               << " (" << key(i).size() << " bytes), expected unique keys");
    }
  }

  size_t size() const { return hashes_.size(); }

  std::string_view key(size_t id) const {
    return std::string_view(arena_.data() + offsets_[id], offsets_[id + 1] - offsets_[id]);
  }

  /// The id of `k`, or -1.
  int64_t find(std::string_view k) const { return find_hashed(k, hash_bytes(k.data(), k.size())); }

  int64_t find_hashed(std::string_view k, uint64_t h) const {
    const uint32_t tag = make_tag(h, k.size());
    const uint64_t pre = prefix(k);
    for (size_t s = h & mask_;; s = (s + 1) & mask_) {
      const Slot& sl = slots_[s];
      if (sl.id < 0) return -1;
      // keys of up to 8 bytes are decided in the slot itself (one cache line, no arena access)
      if (sl.tag == tag && sl.prefix == pre && (k.size() <= 8 || key(sl.id) == k)) return sl.id;
    }
  }

  /// Insert `k` if absent; returns {id, inserted}.
  std::pair<int64_t, bool> insert(std::string_view k) {
    const uint64_t h = hash_bytes(k.data(), k.size());
    int64_t id = find_hashed(k, h);
    if (id >= 0) return {id, false};
    id = static_cast<int64_t>(hashes_.size());
    RAGCORE_CHECK(id < INT32_MAX, "vocabulary larger than 2^31 entries");
    arena_.insert(arena_.end(), k.begin(), k.end());
    offsets_.push_back(static_cast<int64_t>(arena_.size()));
    hashes_.push_back(h);
    if (2 * hashes_.size() > slots_.size()) {
      rehash(slots_.size() * 2);
    } else {
      place(h, static_cast<int32_t>(id));
    }
    return {id, true};
  }

  const std::vector<char>& arena() const { return arena_; }
  const std::vector<int64_t>& offsets() const { return offsets_; }

  void clear() {
    arena_.clear();
    offsets_.assign(1, 0);
    hashes_.clear();
    rehash(64);
  }

 private:
  struct Slot {
    uint64_t prefix;  // first 8 bytes of the key, zero-padded
    uint32_t tag;     // hash bits mixed with the key length
    int32_t id;       // -1: empty
  };

  static uint64_t prefix(std::string_view k) {
    uint64_t p = 0;
    if (!k.empty()) std::memcpy(&p, k.data(), k.size() < 8 ? k.size() : 8);  // an empty key's data may be null
    return p;
  }
  static uint32_t make_tag(uint64_t h, size_t len) {
    return static_cast<uint32_t>(h >> 32) ^ static_cast<uint32_t>(len * 0x9E3779B1u);
  }

  // Put id in the table; with check_dup, returns the id of an equal key met on the way instead
  // (keys of up to 8 bytes compare in the slot; longer ones read the arena only on a tag match), else -1.
  int32_t place(uint64_t h, int32_t id, bool check_dup = false) {
    const std::string_view k = key(id);
    const uint64_t pre = prefix(k);
    const uint32_t tag = make_tag(h, k.size());
    for (size_t s = h & mask_;; s = (s + 1) & mask_) {
      const Slot& sl = slots_[s];
      if (sl.id < 0) {
        slots_[s] = Slot{pre, tag, id};
        return -1;
      }
      if (check_dup && sl.tag == tag && sl.prefix == pre && (k.size() <= 8 || key(sl.id) == k)) return sl.id;
    }
  }

  void rehash(size_t cap) {
    slots_.assign(cap, Slot{0, 0, -1});
    mask_ = cap - 1;
    for (size_t i = 0; i < hashes_.size(); ++i) place(hashes_[i], static_cast<int32_t>(i));
  }

  std::vector<char> arena_;
  std::vector<int64_t> offsets_{0};
  std::vector<uint64_t> hashes_;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

}  // namespace ragcore
