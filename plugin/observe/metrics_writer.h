// NCCL_DEVMEM_METRICS_FILE: one thread per process that sleeps NCCL_DEVMEM_METRICS_INTERVAL_MS,
// then rewrites the file with the process's counters (plugin/observe/prometheus.h) by writing a
// temporary file in the same directory and renaming it over the old one, so a reader
// (node_exporter's textfile collector) never sees half a file. The file is also written when
// NCCL finalizes a context, when the last comm closes, and when the process exits. It exists
// only where the variable is set; the data path never waits for it.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "plugin/core/status.h"

namespace devmem::observe {

// NCCL_DEVMEM_METRICS_FILE's pattern with %p the process id, %h the host name and %% a percent
// sign; any other % stays as it is.
std::string ExpandMetricsPath(std::string_view pattern, long pid, std::string_view host);

// Replaces `path` with `text` at once: a temporary file in the same directory (named
// .BASENAME.XXXXXX, which a *.prom glob skips), mode 0644, renamed over `path`.
Status WriteFileAtomically(const std::string& path, std::string_view text);

class MetricsWriter final {
 public:
  // Starts the thread; `path` is expanded already. The first write happens at once.
  static Result<std::unique_ptr<MetricsWriter>> Start(std::string path,
                                                      std::chrono::milliseconds interval);
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  // In the process that started it: stops the thread after one last write. In a forked child,
  // which has no such thread, nothing (the file is the parent's).
  ~MetricsWriter();

  // Writes the file now, on the calling thread (finalize, last close).
  void WriteNow();
  const std::string& path() const { return path_; }

 private:
  MetricsWriter(std::string path, std::chrono::milliseconds interval);
  static void* Run(void* self);
  void Loop();
  // One snapshot, formatted and written; the first failure is one WARN, later ones are quiet
  // until a write succeeds again.
  void WriteOnce();

  const std::string path_;
  const std::chrono::milliseconds interval_;
  const pid_t owner_;
  std::string host_;
  std::mutex write_mutex_;  // one write at a time (the thread, finalize, last close)
  bool failing_ = false;    // under write_mutex_
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  // A pthread, not a std::thread: a forked child inherits the object but not the thread, and
  // must neither join nor detach it.
  pthread_t thread_{};
};

// The process's writer: started by init when NCCL_DEVMEM_METRICS_FILE is set (again: no-op),
// stopped (with a last write) when the process exits.
Status StartProcessMetrics(const std::string& pattern, std::chrono::milliseconds interval);
// Writes the process's file now if there is one (finalize, the last comm closed).
void RequestMetricsWrite();

}  // namespace devmem::observe
