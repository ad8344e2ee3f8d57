// One side of a plugin connection pair, driven through the exported v11 table exactly as
// NCCL's proxy drives it: non-blocking listen/connect/accept, regMr, isend/irecv, test.
// Used by the benchmark and by the two-process tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "perf/plugin_loader.h"

namespace devmem::testing {

class NetPeer {
 public:
  explicit NetPeer(const abi::NetV11* net) : net_(net) {}
  NetPeer(const NetPeer&) = delete;
  NetPeer& operator=(const NetPeer&) = delete;
  ~NetPeer() { Close(); }

  bool Init(std::string* error) {
    if (net_->init(&ctx_, 0x1234, nullptr, StderrLogger, nullptr) != abi::kSuccess) {
      *error = "init failed";
      return false;
    }
    int ndev = 0;
    if (net_->devices(&ndev) != abi::kSuccess || ndev < 1) {
      *error = "no devices";
      return false;
    }
    return true;
  }

  // Writes the 128-byte handle the peer needs.
  bool Listen(uint8_t* handle, std::string* error) {
    if (net_->listen(ctx_, 0, handle, &listen_comm_) != abi::kSuccess) {
      *error = "listen failed";
      return false;
    }
    return true;
  }

  // Connects to `peer_handle` and accepts from the peer, interleaved, until both are up.
  bool Establish(uint8_t* peer_handle, bool want_send, bool want_recv, int timeout_ms,
                 std::string* error) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    abi::DeviceHandleV7* no_device = nullptr;
    while ((want_send && send_comm_ == nullptr) || (want_recv && recv_comm_ == nullptr)) {
      if (want_send && send_comm_ == nullptr &&
          net_->connect(ctx_, 0, peer_handle, &send_comm_, &no_device) != abi::kSuccess) {
        *error = "connect failed";
        return false;
      }
      if (want_recv && recv_comm_ == nullptr &&
          net_->accept(listen_comm_, &recv_comm_, &no_device) != abi::kSuccess) {
        *error = "accept failed";
        return false;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        *error = "connection setup timed out";
        return false;
      }
    }
    return true;
  }

  void* Register(void* comm, void* data, size_t size) {
    void* mhandle = nullptr;
    if (net_->regMr(comm, data, size, abi::kPtrHost, &mhandle) != abi::kSuccess) return nullptr;
    registrations_.push_back({comm, mhandle});
    return mhandle;
  }

  void Close() {
    for (auto& [comm, mhandle] : registrations_) net_->deregMr(comm, mhandle);
    registrations_.clear();
    if (send_comm_ != nullptr) net_->closeSend(send_comm_);
    if (recv_comm_ != nullptr) net_->closeRecv(recv_comm_);
    if (listen_comm_ != nullptr) net_->closeListen(listen_comm_);
    if (ctx_ != nullptr) net_->finalize(ctx_);
    send_comm_ = recv_comm_ = listen_comm_ = ctx_ = nullptr;
  }

  const abi::NetV11* net() const { return net_; }
  void* send_comm() const { return send_comm_; }
  void* recv_comm() const { return recv_comm_; }

 private:
  const abi::NetV11* net_;
  void* ctx_ = nullptr;
  void* listen_comm_ = nullptr;
  void* send_comm_ = nullptr;
  void* recv_comm_ = nullptr;
  std::vector<std::pair<void*, void*>> registrations_;
};

}  // namespace devmem::testing
