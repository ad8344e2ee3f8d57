// The network table a benchmark drives: a plugin .so loaded the way NCCL loads one (dlopen +
// ncclNetPlugin_v11), or the yardstick, NCCL's own socket transport inside an installed
// libnccl.so.2 (perf/yardstick/installed_nccl_socket.h). The benchmarks take them as
// `--plugin PATH` and `--yardstick installed[:PATH]`.
#pragma once

#include <memory>
#include <string>

#include "perf/yardstick/installed_nccl_socket.h"
#include "tests/common/plugin_loader.h"

namespace devmem::perf {

class NetTable final {
 public:
  // "installed" (the default library) or "installed:PATH".
  static bool IsYardstickSpec(const std::string& spec) {
    return spec == "installed" || spec.rfind("installed:", 0) == 0;
  }

  bool OpenPlugin(const std::string& path, std::string* error) {
    if (!plugin_.Open(path)) {
      *error = "cannot load " + path + ": " + plugin_.error();
      return false;
    }
    table_ = plugin_.v11();
    if (table_ == nullptr) {
      *error = path + " exports no ncclNetPlugin_v11";
      return false;
    }
    description_ = "plugin " + path;
    return true;
  }

  bool OpenYardstick(const std::string& spec, std::string* error) {
    if (!IsYardstickSpec(spec)) {
      *error = "--yardstick " + spec + ": expected installed or installed:PATH";
      return false;
    }
    const std::string path =
        spec == "installed" ? kInstalledNcclDefaultPath : spec.substr(sizeof("installed:") - 1);
    yardstick_ = InstalledNcclSocket::Open(path, error);
    if (yardstick_ == nullptr) return false;
    table_ = yardstick_->table();
    description_ = "yardstick " + yardstick_->description();
    return true;
  }

  const abi::NetV11* v11() const { return table_; }
  // What runs, for the benchmark's header line.
  const std::string& description() const { return description_; }

 private:
  testing::LoadedPlugin plugin_;
  std::unique_ptr<InstalledNcclSocket> yardstick_;
  const abi::NetV11* table_ = nullptr;
  std::string description_;
};

}  // namespace devmem::perf
