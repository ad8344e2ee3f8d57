#include "plugin/observe/prometheus.h"

#include <cinttypes>
#include <cstdio>
#include <initializer_list>
#include <utility>

#include "plugin/core/version.h"

namespace devmem::observe {
namespace {

using Label = std::pair<const char*, std::string_view>;

// Builds the text family by family; names are ours and fixed, values escaped here.
class Exposition {
 public:
  void Family(const char* name, const char* type, const char* help) {
    text_.append("# HELP ").append(name).append(" ").append(EscapeHelp(help)).append("\n");
    text_.append("# TYPE ").append(name).append(" ").append(type).append("\n");
  }
  void Sample(const char* name, std::initializer_list<Label> labels, uint64_t value) {
    char number[32];
    snprintf(number, sizeof(number), "%" PRIu64, value);
    Line(name, labels, number);
  }
  void SampleReal(const char* name, std::initializer_list<Label> labels, double value) {
    char number[40];
    snprintf(number, sizeof(number), "%.9g", value);
    Line(name, labels, number);
  }
  std::string Take() { return std::move(text_); }

 private:
  void Line(const char* name, std::initializer_list<Label> labels, const char* value) {
    text_.append(name);
    if (labels.size() > 0) {
      text_.push_back('{');
      bool first = true;
      for (const Label& label : labels) {
        if (!first) text_.push_back(',');
        first = false;
        text_.append(label.first).append("=\"").append(EscapeLabelValue(label.second));
        text_.push_back('"');
      }
      text_.push_back('}');
    }
    text_.push_back(' ');
    text_.append(value).push_back('\n');
  }
  std::string text_;
};

constexpr DataPath kAllPaths[] = {DataPath::kPlain, DataPath::kDevmem, DataPath::kEmulated,
                                  DataPath::kDevmemTx};
constexpr DataPath kRxFragPaths[] = {DataPath::kDevmem, DataPath::kEmulated};
constexpr Direction kBoth[] = {Direction::kSend, Direction::kRecv};

size_t Index(DataPath path) { return static_cast<size_t>(path); }
size_t Index(Direction direction) { return static_cast<size_t>(direction); }

// A counter or gauge per direction.
void PerDirection(Exposition* out, const char* name, const char* type, const char* help,
                  const uint64_t (&values)[kDirections]) {
  out->Family(name, type, help);
  for (Direction d : kBoth) out->Sample(name, {{"direction", DirectionName(d)}}, values[Index(d)]);
}

// A counter or gauge per direction and path; receive paths only where they exist (devmem TX
// sends, it never receives).
void PerDirectionPath(Exposition* out, const char* name, const char* type, const char* help,
                      const uint64_t (&values)[kDirections][kDataPaths]) {
  out->Family(name, type, help);
  for (Direction d : kBoth) {
    for (DataPath p : kAllPaths) {
      if (d == Direction::kRecv && p == DataPath::kDevmemTx) continue;
      out->Sample(name, {{"direction", DirectionName(d)}, {"path", DataPathName(p)}},
                  values[Index(d)][Index(p)]);
    }
  }
}

// A receive counter of the frag paths (devmem, emulated).
void PerFragPath(Exposition* out, const char* name, const char* help,
                 const uint64_t (&values)[kDataPaths]) {
  out->Family(name, "counter", help);
  for (DataPath p : kRxFragPaths) out->Sample(name, {{"path", DataPathName(p)}}, values[Index(p)]);
}

void Single(Exposition* out, const char* name, const char* type, const char* help, uint64_t value) {
  out->Family(name, type, help);
  out->Sample(name, {}, value);
}

}  // namespace

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '"') {
      out.append("\\\"");
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string FormatPrometheus(const MetricsSnapshot& s, long pid, std::string_view host) {
  Exposition out;
  char pid_text[24];
  snprintf(pid_text, sizeof(pid_text), "%ld", pid);
  out.Family("nccl_devmem_info", "gauge",
             "The plugin's version and the process these counters belong to (always 1).");
  out.Sample("nccl_devmem_info", {{"version", kVersion}, {"pid", pid_text}, {"host", host}}, 1);

  PerDirectionPath(&out, "nccl_devmem_bytes_total", "counter",
                   "Payload bytes by direction and the data path that carried them.", s.bytes);
  PerDirection(&out, "nccl_devmem_messages_total", "counter",
               "Messages (isend, or irecv sub-requests matched to a message).", s.messages);
  PerDirection(&out, "nccl_devmem_inline_messages_total", "counter",
               "Messages whose payload rode the control socket behind its header.",
               s.inline_messages);
  PerDirection(&out, "nccl_devmem_staged_bytes_total", "counter",
               "Bytes of CUDA buffers copied through pinned host memory.", s.staged_bytes);
  PerDirection(&out, "nccl_devmem_data_syscalls_total", "counter",
               "send/recv/recvmsg calls on the data sockets.", s.data_syscalls);
  PerFragPath(&out, "nccl_devmem_frags_total", "Devmem frags received (one token each).", s.frags);
  PerFragPath(&out, "nccl_devmem_region_bytes_total", "Bytes received as frags in the RX region.",
              s.region_bytes);
  PerFragPath(&out, "nccl_devmem_linear_bytes_total",
              "Bytes a devmem connection received as host (linear) data.", s.linear_bytes);
  PerFragPath(&out, "nccl_devmem_pool_stalls_total",
              "Receives that found no free page in the RX pool and waited for tokens.",
              s.pool_stalls);
  Single(&out, "nccl_devmem_steering_misses_total", "counter",
         "Reads on a devmem connection that carried plain data: flow steering did not apply.",
         s.steering_misses);
  Single(&out, "nccl_devmem_tokens_held", "gauge",
         "Frag tokens received and not yet returned to the kernel (or the emulated pool).",
         s.tokens_held);
  Single(&out, "nccl_devmem_tokens_returned_total", "counter",
         "Frag tokens returned with SO_DEVMEM_DONTNEED (or to the emulated pool).",
         s.tokens_returned);
  Single(&out, "nccl_devmem_tokens_not_freed_total", "counter",
         "Returned tokens the kernel did not free.", s.tokens_not_freed);
  out.Family("nccl_devmem_fallbacks_total", "counter",
             "Traffic that did not take the devmem path, by reason.");
  for (size_t r = 0; r < kFallbacks; ++r) {
    out.Sample("nccl_devmem_fallbacks_total", {{"reason", FallbackName(static_cast<Fallback>(r))}},
               s.fallbacks[r]);
  }
  Single(&out, "nccl_devmem_zerocopy_sends_total", "counter",
         "MSG_ZEROCOPY sends (devmem TX and NCCL_DEVMEM_EMULATE_TX).", s.zerocopy_sends);
  Single(&out, "nccl_devmem_zerocopy_completions_total", "counter",
         "MSG_ZEROCOPY sends the kernel reported complete.", s.zerocopy_completions);
  Single(&out, "nccl_devmem_zerocopy_copies_total", "counter",
         "Completions the kernel reported as copied after all (SO_EE_CODE_ZEROCOPY_COPIED).",
         s.zerocopy_copies);
  PerDirectionPath(&out, "nccl_devmem_comms_opened_total", "counter",
                   "Comms opened, by direction and data path.", s.comms_opened);
  PerDirectionPath(&out, "nccl_devmem_comms_open", "gauge",
                   "Comms open now, by direction and data path.", s.comms_open);

  const char* latency = "nccl_devmem_consumer_latency_seconds";
  out.Family(latency, "histogram",
             "From a receive's last byte to its consumer finishing (scatter kernel, NCCL unpack "
             "publish, host scatter).");
  uint64_t cumulative = 0;
  for (size_t b = 0; b < kLatencyBoundsNs.size(); ++b) {
    cumulative += s.consumer_latency.buckets[b];
    char le[32];
    snprintf(le, sizeof(le), "%.9g", static_cast<double>(kLatencyBoundsNs[b]) / 1e9);
    out.Sample("nccl_devmem_consumer_latency_seconds_bucket", {{"le", le}}, cumulative);
  }
  out.Sample("nccl_devmem_consumer_latency_seconds_bucket", {{"le", "+Inf"}},
             s.consumer_latency.count);
  out.SampleReal("nccl_devmem_consumer_latency_seconds_sum", {},
                 static_cast<double>(s.consumer_latency.sum_ns) / 1e9);
  out.Sample("nccl_devmem_consumer_latency_seconds_count", {}, s.consumer_latency.count);
  return out.Take();
}

}  // namespace devmem::observe
