// One side of a set of plugin connections, driven through the exported v11 table exactly as
// NCCL's proxy drives it: non-blocking listen/connect/accept, regMr, isend/irecv, test.
// Like NCCL, each connection has its own listen comm and handle (a channel's connection never
// shares a listener), so accept() returns the connection whose handle the peer connected to.
// Used by the benchmark.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tests/common/plugin_loader.h"

namespace devmem::testing {

// What NCCL's callback does when no profiler plugin is loaded: return success at once, leaving
// the event handle as it is (NCCL v2.28.9 src/plugin/profiler.cc:687-688 tests ncclProfiler,
// NULL without a plugin). NCCL passes this callback to every net plugin's init
// (src/transport/net.cc:178) and a proxy event handle with every isend/irecv
// (src/transport/net.cc:1319, 1470), so this is the profiler cost every NCCL job pays.
inline abi::Result NcclProfilerWithoutPlugin(void** /*eHandle*/, int /*type*/, void* /*pHandle*/,
                                             int64_t /*pluginId*/, void* /*extData*/) {
  return abi::kSuccess;
}

class NetPeer {
 public:
  explicit NetPeer(const abi::NetV11* net) : net_(net) {}
  NetPeer(const NetPeer&) = delete;
  NetPeer& operator=(const NetPeer&) = delete;
  ~NetPeer() { Close(); }

  // `nccl_profiler`: init with NCCL's profiler callback (as NCCL always does) and pass an event
  // handle with every isend/irecv (phandles()); default: neither, as a non-NCCL host might.
  bool Init(std::string* error, bool nccl_profiler = false) {
    profiler_ = nccl_profiler;
    if (net_->init(&ctx_, 0x1234, nullptr, StderrLogger,
                   nccl_profiler ? NcclProfilerWithoutPlugin : nullptr) != abi::kSuccess) {
      *error = "init failed";
      return false;
    }
    initialized_ = true;  // NCCL's socket transport leaves ctx NULL: finalize all the same
    int ndev = 0;
    if (net_->devices(&ndev) != abi::kSuccess || ndev < 1) {
      *error = "no devices";
      return false;
    }
    return true;
  }

  // Fuses devices 0..n-1 into one virtual NIC (makeVDevice, as NCCL does with
  // NCCL_NET_FORCE_MERGE) and uses it from then on; n == 1 keeps device 0.
  bool Fuse(int n, std::string* error) {
    int ndev = 0;
    if (net_->devices(&ndev) != abi::kSuccess || ndev < n) {
      *error = "--fuse " + std::to_string(n) + ": the plugin offers " + std::to_string(ndev) +
               " devices";
      return false;
    }
    if (n == 1) return true;
    abi::VDeviceProps props{};
    props.ndevs = n;
    for (int i = 0; i < n; ++i) props.devs[i] = i;
    if (net_->makeVDevice == nullptr || net_->makeVDevice(&dev_, &props) != abi::kSuccess) {
      *error = "makeVDevice of " + std::to_string(n) + " devices failed";
      return false;
    }
    return true;
  }

  // Listens `count` times on the device; writes `count` handles of kNetHandleMaxSize bytes each.
  bool Listen(int count, uint8_t* handles, std::string* error) {
    listen_comms_.assign(static_cast<size_t>(count), nullptr);
    for (int i = 0; i < count; ++i) {
      if (net_->listen(ctx_, dev_, handles + static_cast<size_t>(i) * abi::kNetHandleMaxSize,
                       &listen_comms_[static_cast<size_t>(i)]) != abi::kSuccess) {
        *error = "listen failed";
        return false;
      }
    }
    return true;
  }

  // Connects send comm i to the peer's handle i and accepts recv comm i on listen comm i,
  // all interleaved, until every wanted comm is up. `peer_handles` must stay in place: NCCL's
  // transports keep their connection state inside the handle between connect() calls.
  bool Establish(uint8_t* peer_handles, bool want_send, bool want_recv, int timeout_ms,
                 std::string* error) {
    const int count = static_cast<int>(listen_comms_.size());
    return Establish(peer_handles, want_send ? count : 0, want_recv ? count : 0, timeout_ms, error);
  }
  // The same with `sends` send comms (to the peer's first `sends` handles) and `recvs` recv
  // comms (on the first `recvs` listen comms).
  bool Establish(uint8_t* peer_handles, int sends, int recvs, int timeout_ms, std::string* error) {
    if (recvs > static_cast<int>(listen_comms_.size())) {
      *error = "more recv comms than listen comms";
      return false;
    }
    send_comms_.assign(static_cast<size_t>(sends), nullptr);
    recv_comms_.assign(static_cast<size_t>(recvs), nullptr);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    abi::DeviceHandleV7* no_device = nullptr;
    for (;;) {
      bool all_up = true;
      for (size_t i = 0; i < send_comms_.size(); ++i) {
        if (send_comms_[i] != nullptr) continue;
        if (net_->connect(ctx_, dev_, peer_handles + i * abi::kNetHandleMaxSize, &send_comms_[i],
                          &no_device) != abi::kSuccess) {
          *error = "connect failed";
          return false;
        }
        all_up = all_up && send_comms_[i] != nullptr;
      }
      for (size_t i = 0; i < recv_comms_.size(); ++i) {
        if (recv_comms_[i] != nullptr) continue;
        if (net_->accept(listen_comms_[i], &recv_comms_[i], &no_device) != abi::kSuccess) {
          *error = "accept failed";
          return false;
        }
        all_up = all_up && recv_comms_[i] != nullptr;
      }
      if (all_up) return true;
      if (std::chrono::steady_clock::now() > deadline) {
        *error = "connection setup timed out";
        return false;
      }
    }
  }

  void* Register(void* comm, void* data, size_t size) {
    void* mhandle = nullptr;
    return Register(comm, data, size, &mhandle) ? mhandle : nullptr;
  }
  // The same, telling a failure from a transport whose handle is NULL (NCCL's socket transport).
  bool Register(void* comm, void* data, size_t size, void** mhandle) {
    *mhandle = nullptr;
    if (net_->regMr(comm, data, size, abi::kPtrHost, mhandle) != abi::kSuccess) return false;
    registrations_.push_back({comm, *mhandle});
    return true;
  }

  void Close() {
    for (auto& [comm, mhandle] : registrations_) net_->deregMr(comm, mhandle);
    registrations_.clear();
    for (void* comm : send_comms_) {
      if (comm != nullptr) net_->closeSend(comm);
    }
    for (void* comm : recv_comms_) {
      if (comm != nullptr) net_->closeRecv(comm);
    }
    for (void* comm : listen_comms_) {
      if (comm != nullptr) net_->closeListen(comm);
    }
    send_comms_.clear();
    recv_comms_.clear();
    listen_comms_.clear();
    if (initialized_) net_->finalize(ctx_);
    initialized_ = false;
    ctx_ = nullptr;
  }

  const abi::NetV11* net() const { return net_; }
  void* send_comm(int i) const { return send_comms_[static_cast<size_t>(i)]; }
  void* recv_comm(int i) const { return recv_comms_[static_cast<size_t>(i)]; }

  // The event handles isend/irecv pass (NCCL's proxy passes one per step; opaque to the plugin,
  // which only hands it back to the callback): null unless Init asked for NCCL's profiler.
  // isend takes phandles()[0]; irecv (a grouped receive) the array, one handle per buffer.
  void** phandles() { return profiler_ ? phandles_ : nullptr; }
  void* send_phandle() { return profiler_ ? phandles_[0] : nullptr; }

 private:
  bool profiler_ = false;
  char proxy_event_handle_ = 0;
  void* phandles_[1] = {&proxy_event_handle_};
  const abi::NetV11* net_;
  void* ctx_ = nullptr;
  int dev_ = 0;  // device 0, or the virtual NIC Fuse() made
  bool initialized_ = false;
  std::vector<void*> listen_comms_;
  std::vector<void*> send_comms_;
  std::vector<void*> recv_comms_;
  std::vector<std::pair<void*, void*>> registrations_;
};

}  // namespace devmem::testing
