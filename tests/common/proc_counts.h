// What the process holds right now, from /proc: the tests that require every fd and thread of
// the comms they closed to be gone compare these against a baseline.
#pragma once

#include <dirent.h>

namespace devmem::testing {

// Entries of a /proc directory (the directory's own fd, open while it is read, included).
inline int CountProcEntries(const char* dir_path) {
  int count = 0;
  DIR* dir = opendir(dir_path);
  if (dir == nullptr) return -1;
  while (dirent* entry = readdir(dir)) count += entry->d_name[0] != '.' ? 1 : 0;
  closedir(dir);
  return count;
}
inline int OpenFdCount() { return CountProcEntries("/proc/self/fd"); }
inline int ThreadCount() { return CountProcEntries("/proc/self/task"); }

}  // namespace devmem::testing
