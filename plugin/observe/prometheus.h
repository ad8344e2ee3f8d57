// The metrics snapshot in the Prometheus text exposition format (version 0.0.4, what
// node_exporter's textfile collector reads): per metric family one `# HELP` and one `# TYPE`
// line, then its samples, `name{label="value",...} value`, one per line, the file ending with a
// newline. Histograms are cumulative `_bucket{le="..."}` samples ending with le="+Inf", then
// `_sum` and `_count`.
#pragma once

#include <string>
#include <string_view>

#include "plugin/observe/metrics.h"

namespace devmem::observe {

// A label value as the format requires it: backslash, double quote and line feed escaped as
// \\, \" and \n.
std::string EscapeLabelValue(std::string_view value);
// HELP text: backslash and line feed escaped as \\ and \n.
std::string EscapeHelp(std::string_view text);

// The whole exposition of `snapshot`, with `pid` and `host` as labels of the info sample.
std::string FormatPrometheus(const MetricsSnapshot& snapshot, long pid, std::string_view host);

}  // namespace devmem::observe
