// Rows of a ReadinessReport by check name, for the readiness tests.
#pragma once

#include <string>

#include "plugin/setup/readiness.h"

namespace devmem::testing {

// The first row named `check`, or nullptr; valid while `report` lives.
inline const CheckOutcome* Find(const ReadinessReport& report, const std::string& check) {
  for (const CheckOutcome& c : report.checks()) {
    if (c.check == check) return &c;
  }
  return nullptr;
}

// A copy of one row of a report that is gone afterwards; an empty check name when missing.
inline CheckOutcome Row(const ReadinessReport& report, const std::string& check) {
  const CheckOutcome* row = Find(report, check);
  return row != nullptr ? *row : CheckOutcome{};
}

}  // namespace devmem::testing
