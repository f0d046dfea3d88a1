// UTF-8 decoding and the Unicode properties the analyzer needs, from tables generated at build
// time by tools/gen_unicode_tables.py out of the building Python's own str.isalnum / str.lower.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "ragcore_unicode_tables.inc"

namespace ragcore {
namespace unicode {

constexpr uint32_t kInvalid = 0xFFFFFFFFu;

/// Decode one code point of s[i..n) and advance i past it. Invalid or truncated sequences,
/// overlongs, surrogates and values above U+10FFFF return kInvalid and advance by one byte, so the
/// valid code points extracted are exactly those of Python's `bytes.decode("utf-8", "replace")`.
inline uint32_t decode(const unsigned char* s, size_t n, size_t& i) {
  const unsigned char c = s[i];
  if (c < 0x80) {
    ++i;
    return c;
  }
  auto cont = [&](size_t j) { return j < n && (s[j] & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) {
    if (cont(i + 1)) {
      uint32_t cp = ((c & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu);
      i += 2;
      return cp;
    }
  } else if (c >= 0xE0 && c <= 0xEF) {
    if (i + 1 < n) {
      const unsigned char c1 = s[i + 1];
      const bool ok1 = (c == 0xE0)   ? (c1 >= 0xA0 && c1 <= 0xBF)
                       : (c == 0xED) ? (c1 >= 0x80 && c1 <= 0x9F)
                                     : ((c1 & 0xC0) == 0x80);
      if (ok1 && cont(i + 2)) {
        uint32_t cp = ((c & 0x0Fu) << 12) | ((c1 & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
        i += 3;
        return cp;
      }
    }
  } else if (c >= 0xF0 && c <= 0xF4) {
    if (i + 1 < n) {
      const unsigned char c1 = s[i + 1];
      const bool ok1 = (c == 0xF0)   ? (c1 >= 0x90 && c1 <= 0xBF)
                       : (c == 0xF4) ? (c1 >= 0x80 && c1 <= 0x8F)
                                     : ((c1 & 0xC0) == 0x80);
      if (ok1 && cont(i + 2) && cont(i + 3)) {
        uint32_t cp = ((c & 0x07u) << 18) | ((c1 & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) |
                      (s[i + 3] & 0x3Fu);
        i += 4;
        return cp;
      }
    }
  }
  ++i;
  return kInvalid;
}

/// Append the UTF-8 encoding of a valid code point.
inline void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

/// Python's `\w` for str patterns: `ch.isalnum() or ch == "_"`.
inline bool is_word(uint32_t cp) {
  using namespace unicode_tables;
  if (cp >= 0x110000) return false;
  return kWordBlocks[static_cast<size_t>(kWordBlockIndex[cp >> 8]) * 256 + (cp & 0xFF)] != 0;
}

/// Full lowercase mapping of one code point (Python's str.lower), except U+03A3 which depends on
/// its context (see final_sigma). Writes 1 or 2 code points to out and returns their number.
inline int lower(uint32_t cp, uint32_t out[2]) {
  using namespace unicode_tables;
  if (cp >= 0x110000) {
    out[0] = cp;
    return 1;
  }
  const int32_t d = kLowerBlocks[static_cast<size_t>(kLowerBlockIndex[cp >> 8]) * 256 + (cp & 0xFF)];
  if (d != 0 || cp < 0x100) {
    out[0] = static_cast<uint32_t>(static_cast<int32_t>(cp) + d);
    return 1;
  }
  for (uint32_t j = 0; j < kLowerSpecialCount; ++j) {
    if (kLowerSpecial[j][0] == cp) {
      out[0] = kLowerSpecial[j][2];
      out[1] = kLowerSpecial[j][3];
      return static_cast<int>(kLowerSpecial[j][1]);
    }
  }
  out[0] = cp;
  return 1;
}

inline bool in_ranges(const uint32_t (*r)[2], uint32_t count, uint32_t cp) {
  uint32_t lo = 0, hi = count;
  while (lo < hi) {
    const uint32_t mid = (lo + hi) / 2;
    if (r[mid][1] < cp) lo = mid + 1;
    else hi = mid;
  }
  return lo < count && r[lo][0] <= cp;
}
inline bool is_case_ignorable(uint32_t cp) {
  return in_ranges(unicode_tables::kCaseIgnorable, unicode_tables::kCaseIgnorableCount, cp);
}
inline bool is_cased(uint32_t cp) {
  return in_ranges(unicode_tables::kCased, unicode_tables::kCasedCount, cp);
}

/// CPython's Final_Sigma rule for the U+03A3 occupying s[begin, end): true when it lowercases to
/// U+03C2 (final sigma), false for U+03C3. Invalid bytes count as U+FFFD (neither cased nor ignorable).
inline bool final_sigma(const unsigned char* s, size_t n, size_t begin, size_t end) {
  // Backwards: skip case-ignorable code points, then require a cased one.
  size_t p = begin;
  bool cased_before = false;
  while (p > 0) {
    size_t q = p - 1;
    while (q > 0 && (s[q] & 0xC0) == 0x80 && p - q < 4) --q;
    size_t j = q;
    uint32_t cp = decode(s, n, j);
    if (cp == kInvalid || j != p) break;  // an invalid byte just before p
    if (!is_case_ignorable(cp)) {
      cased_before = is_cased(cp);
      break;
    }
    p = q;
  }
  if (!cased_before) return false;
  size_t i = end;
  while (i < n) {
    uint32_t cp = decode(s, n, i);
    if (cp == kInvalid) return true;
    if (!is_case_ignorable(cp)) return !is_cased(cp);
  }
  return true;
}

}  // namespace unicode
}  // namespace ragcore
