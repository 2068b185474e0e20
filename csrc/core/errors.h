// Exceptions of the core, mapped to Python's by the bindings.
#pragma once

#include <stdexcept>

namespace hyprvdb {

// Coordinates outside the matrix; IndexError.
struct OutOfRange : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// Bad values or shapes; ValueError.
struct BadValue : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

}  // namespace hyprvdb
