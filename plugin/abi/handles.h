// The typed face of the handle registry for plugin_api.cc: which kind of handle each object the
// ABI hands out is, and finding, publishing and withdrawing objects by type.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "plugin/abi/handle_registry.h"
#include "plugin/core/log.h"
#include "plugin/cuda/memory.h"
#include "plugin/transport/comm.h"
#include "plugin/transport/connector.h"
#include "plugin/transport/listen_comm.h"
#include "plugin/transport/request.h"

namespace devmem::api {

// One per NCCL communicator (v11 init).
struct PluginContext {
  uint64_t comm_id = 0;
  int traffic_class = -1;
};

template <typename T>
struct KindOf;
template <>
struct KindOf<PluginContext> {
  static constexpr HandleKind kKind = HandleKind::kContext;
};
template <>
struct KindOf<ListenComm> {
  static constexpr HandleKind kKind = HandleKind::kListenComm;
};
template <>
struct KindOf<SendComm> {
  static constexpr HandleKind kKind = HandleKind::kSendComm;
};
template <>
struct KindOf<RecvComm> {
  static constexpr HandleKind kKind = HandleKind::kRecvComm;
};
template <>
struct KindOf<MemoryRegion> {
  static constexpr HandleKind kKind = HandleKind::kMemory;
};
template <>
struct KindOf<Connector> {
  static constexpr HandleKind kKind = HandleKind::kConnector;
};

static_assert(RequestPool::kSize <= HandleRegistry::kMaxRequestsPerComm);

inline HandleRegistry& Handles() { return HandleRegistry::Global(); }

// The object behind a live handle of T's kind; nullptr for anything else. Never reads the memory
// `handle` points to.
template <typename T>
T* Find(const void* handle) {
  return static_cast<T*>(Handles().Find(handle, KindOf<T>::kKind));
}

// A send or a receive comm (regMr, deregMr, getDeviceMr take either).
inline Comm* AnyComm(const void* handle) {
  if (SendComm* send = Find<SendComm>(handle)) return send;
  return Find<RecvComm>(handle);
}

// A new handle for `object`, which the registry's entry owns from now on (until Withdraw).
// `owner`: the comm handle an mhandle belongs to.
template <typename T>
Result<void*> Publish(std::unique_ptr<T> object, const void* owner = nullptr) {
  Result<void*> handle = Handles().Add(KindOf<T>::kKind, object.get(), owner);
  if (handle.ok()) object.release();  // NOLINT(bugprone-unused-return-value): owned by the entry
  return handle;
}

// Removes a live handle of T's kind and gives its object back; nullptr when `handle` is none (a
// stale handle, another kind, a pointer). A comm's registrations go with it: NCCL deregisters
// them first, other callers may not.
template <typename T>
std::unique_ptr<T> Withdraw(const void* handle) {
  std::vector<OwnedObject> owned;
  std::unique_ptr<T> object(
      static_cast<T*>(Handles().Remove(handle, KindOf<T>::kKind, nullptr, &owned)));
  for (const OwnedObject& o : owned) {
    if (o.kind == HandleKind::kMemory) delete static_cast<MemoryRegion*>(o.object);
  }
  if (!owned.empty()) {
    log::Info(log::kNet, "%s %p closed with %zu memory registrations never deregistered; released",
              HandleKindName(KindOf<T>::kKind), handle, owned.size());
  }
  return object;
}

// The request a live request handle names, and its comm (one of send, recv is set).
struct LiveRequest {
  Comm* comm = nullptr;
  SendComm* send = nullptr;
  RecvComm* recv = nullptr;
  Request* request = nullptr;
};

inline bool FindRequest(const void* handle, LiveRequest* out) {
  RequestRef ref{};
  if (!Handles().FindRequest(handle, &ref)) return false;
  if (ref.comm_kind == HandleKind::kSendComm) {
    out->send = static_cast<SendComm*>(ref.comm);
    out->comm = out->send;
  } else {
    out->recv = static_cast<RecvComm*>(ref.comm);
    out->comm = out->recv;
  }
  out->request = out->comm->pool().At(ref.index);
  return out->request != nullptr;
}

// The handle NCCL gets for `request` of the comm behind `comm_handle`.
inline void* RequestHandle(const void* comm_handle, Comm* comm, const Request* request) {
  return HandleRegistry::RequestHandle(comm_handle,
                                       static_cast<uint32_t>(comm->pool().IndexOf(request)));
}

}  // namespace devmem::api
