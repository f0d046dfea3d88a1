// Errors and small utilities shared by the whole native core. No Python here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace ragcore {

/// A user error about a value (becomes ValueError in Python).
struct value_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
/// A user error about a type (becomes TypeError in Python).
struct type_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
/// A user error about an index out of range (becomes IndexError in Python).
struct index_error : std::out_of_range {
  using std::out_of_range::out_of_range;
};
/// A broken internal invariant: a bug in ragcore, never the user's fault.
struct internal_error : std::logic_error {
  using std::logic_error::logic_error;
};

}  // namespace ragcore

#define RAGCORE_THROW_(kind, msg)                  \
  do {                                             \
    std::ostringstream ragcore_os_;                \
    ragcore_os_ << msg;                            \
    throw ::ragcore::kind(ragcore_os_.str());      \
  } while (0)

/// User-facing check: `RAGCORE_CHECK(k > 0, "k must be >= 1, got " << k)` -> ValueError.
#define RAGCORE_CHECK(cond, msg) \
  do {                           \
    if (!(cond)) RAGCORE_THROW_(value_error, msg); \
  } while (0)
#define RAGCORE_CHECK_TYPE(cond, msg) \
  do {                                \
    if (!(cond)) RAGCORE_THROW_(type_error, msg); \
  } while (0)
#define RAGCORE_CHECK_INDEX(cond, msg) \
  do {                                 \
    if (!(cond)) RAGCORE_THROW_(index_error, msg); \
  } while (0)
/// Internal invariant (kept in release builds: these are cheap and guard memory safety).
#define RAGCORE_ASSERT(cond)                                                              \
  do {                                                                                    \
    if (!(cond))                                                                          \
      RAGCORE_THROW_(internal_error, "ragcore internal error: " #cond " at " << __FILE__ \
                                                                 << ":" << __LINE__);     \
  } while (0)
