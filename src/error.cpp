#include "volt/error.h"

namespace volt::detail {

void throw_error(const char* /*file*/, int /*line*/, const std::string& message) {
  // The message is for users: it names the problem and the fix, not volt's source location.
  throw Error(message);
}

}  // namespace volt::detail
