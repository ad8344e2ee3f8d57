#include "plugin/observe/metrics_writer.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "plugin/core/log.h"
#include "plugin/core/unique_fd.h"
#include "plugin/observe/metrics.h"
#include "plugin/observe/prometheus.h"

namespace devmem::observe {
namespace {

std::string HostName() {
  char name[HOST_NAME_MAX + 1] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

}  // namespace

std::string ExpandMetricsPath(std::string_view pattern, long pid, std::string_view host) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    const char next = i + 1 < pattern.size() ? pattern[i + 1] : '\0';
    if (c == '%' && next == 'p') {
      out.append(std::to_string(pid));
      ++i;
    } else if (c == '%' && next == 'h') {
      out.append(host);
      ++i;
    } else if (c == '%' && next == '%') {
      out.push_back('%');
      ++i;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Status WriteFileAtomically(const std::string& path, std::string_view text) {
  const size_t slash = path.rfind('/');
  std::string temp = slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
  temp.push_back('.');
  temp.append(slash == std::string::npos ? path : path.substr(slash + 1));
  temp.append(".XXXXXX");
  UniqueFd fd(mkostemp(temp.data(), O_CLOEXEC));
  if (!fd.valid()) return Status::Errno(errno, "creating a temporary file %s", temp.c_str());
  auto fail = [&](const char* step) {
    const int err = errno;
    unlink(temp.c_str());
    return Status::Errno(err, "%s %s", step, temp.c_str());
  };
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = write(fd.get(), text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("writing");
    written += static_cast<size_t>(n);
  }
  // mkostemp makes it 0600: the collector usually runs as another user.
  if (fchmod(fd.get(), 0644) != 0) return fail("chmod of");
  fd.reset();
  if (rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    unlink(temp.c_str());
    return Status::Errno(err, "renaming %s to %s", temp.c_str(), path.c_str());
  }
  return Status::Ok();
}

MetricsWriter::MetricsWriter(std::string path, std::chrono::milliseconds interval)
    : path_(std::move(path)), interval_(interval), owner_(getpid()), host_(HostName()) {}

Result<std::unique_ptr<MetricsWriter>> MetricsWriter::Start(std::string path,
                                                            std::chrono::milliseconds interval) {
  std::unique_ptr<MetricsWriter> writer(new MetricsWriter(std::move(path), interval));
  const int err = pthread_create(&writer->thread_, nullptr, &MetricsWriter::Run, writer.get());
  if (err != 0) return Status::Errno(err, "starting the metrics writer thread");
  return writer;
}

MetricsWriter::~MetricsWriter() {
  if (getpid() != owner_) return;  // a forked child: the thread is the parent's
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  pthread_join(thread_, nullptr);
}

void* MetricsWriter::Run(void* self) {
  static_cast<MetricsWriter*>(self)->Loop();
  return nullptr;
}

void MetricsWriter::Loop() {
  while (true) {
    WriteOnce();
    std::unique_lock<std::mutex> lock(mutex_);
    if (wake_.wait_for(lock, interval_, [&] { return stop_; })) break;
  }
  WriteOnce();  // the counts at exit
}

void MetricsWriter::WriteNow() { WriteOnce(); }

void MetricsWriter::WriteOnce() {
  std::lock_guard<std::mutex> lock(write_mutex_);
  const std::string text =
      FormatPrometheus(MetricsRegistry::Process().Snapshot(), static_cast<long>(owner_), host_);
  Status written = WriteFileAtomically(path_, text);
  if (written.ok()) {
    if (failing_) log::Info(log::kNet, "metrics file %s written again", path_.c_str());
    failing_ = false;
    return;
  }
  if (failing_) return;
  failing_ = true;
  log::Warn(
      "NCCL_DEVMEM_METRICS_FILE: cannot write %s: %s; the counters are not written until it "
      "can be (this WARN is not repeated)",
      path_.c_str(), written.message().c_str());
}

namespace {

struct ProcessWriter {
  std::mutex mutex;
  std::unique_ptr<MetricsWriter> writer;
};

ProcessWriter& Process() {
  // Destroyed at exit, which writes the last counts; the registry it reads is never destroyed.
  static ProcessWriter process;
  return process;
}

}  // namespace

Status StartProcessMetrics(const std::string& pattern, std::chrono::milliseconds interval) {
  ProcessWriter& process = Process();
  std::lock_guard<std::mutex> lock(process.mutex);
  if (process.writer != nullptr) return Status::Ok();
  MetricsRegistry::Process().Enable();
  const std::string path = ExpandMetricsPath(pattern, static_cast<long>(getpid()), HostName());
  Result<std::unique_ptr<MetricsWriter>> writer = MetricsWriter::Start(path, interval);
  if (!writer.ok()) return writer.status();
  process.writer = std::move(writer).value();
  log::Info(log::kInit, "metrics: %s every %lld ms (Prometheus text format)", path.c_str(),
            static_cast<long long>(interval.count()));
  return Status::Ok();
}

void RequestMetricsWrite() {
  ProcessWriter& process = Process();
  std::lock_guard<std::mutex> lock(process.mutex);
  if (process.writer != nullptr) process.writer->WriteNow();
}

}  // namespace devmem::observe
