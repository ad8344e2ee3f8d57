// What this process holds right now, as the kernel counts it: threads (/proc/self/task), open
// file descriptors (/proc/self/fd), resident memory (/proc/self/statm) and CPU time used by all
// its threads (getrusage). The benchmarks take differences of two snapshots.
#pragma once

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>

namespace devmem::perf {

// User + system CPU seconds of this process so far (all its threads: workers included).
inline double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

struct ProcessUsage {
  int64_t threads = 0;
  int64_t fds = 0;
  int64_t rss_kib = 0;

  static ProcessUsage Now() {
    ProcessUsage usage;
    usage.threads = CountEntries("/proc/self/task");
    usage.fds = CountEntries("/proc/self/fd") - 1;  // less the one opendir holds while counting
    long pages_total = 0;
    long pages_resident = 0;
    if (FILE* statm = fopen("/proc/self/statm", "re")) {
      if (fscanf(statm, "%ld %ld", &pages_total, &pages_resident) != 2) pages_resident = 0;
      fclose(statm);
    }
    usage.rss_kib = pages_resident * (sysconf(_SC_PAGESIZE) / 1024);
    return usage;
  }
  ProcessUsage operator-(const ProcessUsage& base) const {
    return {threads - base.threads, fds - base.fds, rss_kib - base.rss_kib};
  }
  ProcessUsage operator+(const ProcessUsage& other) const {
    return {threads + other.threads, fds + other.fds, rss_kib + other.rss_kib};
  }

 private:
  static int64_t CountEntries(const char* path) {
    DIR* dir = opendir(path);
    if (dir == nullptr) return -1;
    int64_t count = 0;
    while (const dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++count;
    }
    closedir(dir);
    return count;
  }
};

}  // namespace devmem::perf
