// Early-return helpers for absl::Status and absl::StatusOr, as used across the core.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define OUTBOXD_CONCAT_INNER(a, b) a##b
#define OUTBOXD_CONCAT(a, b) OUTBOXD_CONCAT_INNER(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                                  \
  do {                                                         \
    if (absl::Status _outboxd_status = (expr); !_outboxd_status.ok()) \
      return _outboxd_status;                                  \
  } while (0)

// ASSIGN_OR_RETURN(auto x, Foo()): binds the value or returns the error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL(OUTBOXD_CONCAT(_outboxd_statusor_, __LINE__), lhs, rexpr)

#define ASSIGN_OR_RETURN_IMPL(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                          \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = *std::move(statusor)
