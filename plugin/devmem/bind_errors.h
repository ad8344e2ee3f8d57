// What a refused bind-rx or bind-tx means when the kernel gives no text of its own. Many real
// refusals arrive as a bare errno (524 from the GPU driver's dma_buf_attach, E2BIG from the
// page pool, ENODATA from the queue restart, EOPNOTSUPP from a driver without the queue API);
// this table is the one place that turns each into what it means and where to look, taken
// from the kernel's and the GPU driver's own code paths (each entry names its source).
// docs/bind-errors.md shows the same table to users (a test keeps the two in step).
#pragma once

#include <span>
#include <string>

namespace devmem {

enum class BindCommand { kRx, kTx };

// include/linux/errno.h: ENOTSUPP (524) is kernel-internal, so libc has no name for it
// ("Unknown error 524"); NVIDIA's nv_dma_buf_attach returns it through dma_buf_attach.
inline constexpr int kKernelEnotsupp = 524;

struct BindErrorCause {
  BindCommand command;
  int error;               // positive errno
  const char* error_name;  // "E2BIG"
  // The extack message the kernel sends with this errno on this path, "" for none. An entry
  // applies to a refusal with this message or with none at all.
  const char* extack;
  const char* meaning;
  const char* where_to_look;
  const char* upstream;  // where the kernel or driver returns it
};

// Every cause, bind-rx first.
std::span<const BindErrorCause> BindErrorCauses();

// The sentence to add to a refused bind: the table's cause for (command, error, extack);
// for an errno without extack that the table lacks, where to look; empty when the kernel's
// extack message (not in the table) already says what went wrong. `error` is positive.
std::string ExplainBindRefusal(BindCommand command, int error, const std::string& extack);

}  // namespace devmem
