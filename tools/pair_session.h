// One side of the pair check's plugin connections, driven through the plugin's own entry points
// (devmem::api, the functions every exported ncclNetPlugin_vN table adapts) the way NCCL's
// proxy drives them: non-blocking listen/connect/accept, regMr, a window of isend/irecv of
// which the oldest is tested. Each side has one send comm and one recv comm; both directions
// run over them in turn, so one registered buffer serves both.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "plugin/core/nccl_contract.h"
#include "plugin/core/status.h"
#include "tools/pair_control.h"
#include "tools/pair_protocol.h"

namespace devmem::doctor {

// Called while a step waits on the plugin: an error (the peer failed, the deadline passed) ends
// the step with it.
using Watch = std::function<Status()>;

class PluginSession final {
 public:
  // Initializes the plugin (its configuration from the environment, as under NCCL) with a logger
  // that keeps its lines; `verbose` also prints its INFO lines on stderr (WARNs always).
  static Result<std::unique_ptr<PluginSession>> Open(bool verbose);
  PluginSession(const PluginSession&) = delete;
  PluginSession& operator=(const PluginSession&) = delete;
  ~PluginSession();

  const std::string& nic() const { return nic_; }
  uint64_t max_message_bytes() const { return max_message_bytes_; }

  Status Listen(uint8_t* handle);
  // Connects to the peer's listen handle and accepts the peer's connection until both comms are
  // up. `peer_handle` is changed in place, as NCCL's connect does with its handle.
  Status Establish(uint8_t* peer_handle, const Watch& watch);
  // Allocates and registers on both comms the buffer of `slots` messages of `slot_bytes`.
  Status Register(size_t slots, uint64_t slot_bytes);

  // `messages` messages of `size` bytes in `direction`, the pattern in every byte, up to one per
  // slot in flight.
  Status Send(uint32_t direction, uint64_t size, uint32_t messages, const Watch& watch);
  // The same direction received and checked byte for byte; the receiver's clock and findings.
  Result<SizeResult> Receive(uint32_t direction, uint64_t size, uint32_t messages,
                             const Watch& watch);

  // The data path the plugin chose for each comm (its own words: the line it logged for the
  // comm), with the receive side's frag counters.
  PathReport SendPath() const;
  PathReport RecvPath() const;

 private:
  PluginSession() = default;
  // Tests the request until done; its size in *bytes.
  Status Wait(void* request, int* bytes, const Watch& watch, const char* what);

  void* ctx_ = nullptr;
  void* listen_comm_ = nullptr;
  void* send_comm_ = nullptr;
  void* recv_comm_ = nullptr;
  void* send_mhandle_ = nullptr;
  void* recv_mhandle_ = nullptr;
  std::unique_ptr<uint8_t, void (*)(void*)> buffer_{nullptr, nullptr};
  size_t slots_ = 0;
  uint64_t slot_bytes_ = 0;
  std::string nic_;
  uint64_t max_message_bytes_ = 0;
};

}  // namespace devmem::doctor
