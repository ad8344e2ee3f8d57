// The handle registry on its own: what a handle looks like, when it stops naming its object
// (removal, slot reuse, its owner's removal), and that lookups never mistake one kind or one
// generation for another.
#include "plugin/abi/handle_registry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

namespace devmem::api {
namespace {

uint64_t Bits(const void* handle) {
  return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(handle));
}

void* Added(HandleRegistry& registry, HandleKind kind, void* object, const void* owner = nullptr) {
  Result<void*> handle = registry.Add(kind, object, owner);
  EXPECT_TRUE(handle.ok()) << handle.status().message();
  return handle.ok() ? handle.value() : nullptr;
}

TEST(HandleRegistryTest, HandlesAreNeverPointersNullOrNcclsReceiveHint) {
  HandleRegistry registry;
  int objects[64];
  for (int& object : objects) {
    void* handle = Added(registry, HandleKind::kSendComm, &object);
    EXPECT_NE(Bits(handle) >> 63, 0u) << "no user-space pointer has bit 63";
    EXPECT_NE(handle, static_cast<void*>(&object));
    EXPECT_EQ(registry.Find(handle, HandleKind::kSendComm), &object);
    void* request = HandleRegistry::RequestHandle(handle, 0);
    EXPECT_NE(request, nullptr);
    EXPECT_NE(Bits(request), 1u);
  }
  EXPECT_EQ(registry.live(), 64u);
}

TEST(HandleRegistryTest, FindNeedsTheRightKindAndALiveHandle) {
  HandleRegistry registry;
  int object = 0;
  void* handle = Added(registry, HandleKind::kRecvComm, &object);
  EXPECT_EQ(registry.Find(handle, HandleKind::kRecvComm), &object);
  for (HandleKind other : {HandleKind::kContext, HandleKind::kListenComm, HandleKind::kSendComm,
                           HandleKind::kMemory, HandleKind::kConnector}) {
    EXPECT_EQ(registry.Find(handle, other), nullptr);
    EXPECT_EQ(registry.Remove(handle, other), nullptr);
  }
  EXPECT_EQ(registry.Find(nullptr, HandleKind::kRecvComm), nullptr);
  EXPECT_EQ(registry.Find(&object, HandleKind::kRecvComm), nullptr);
  EXPECT_EQ(registry.Remove(handle, HandleKind::kRecvComm), &object);
  EXPECT_EQ(registry.Find(handle, HandleKind::kRecvComm), nullptr);
  EXPECT_EQ(registry.Remove(handle, HandleKind::kRecvComm), nullptr) << "removed twice";
  EXPECT_EQ(registry.live(), 0u);
}

TEST(HandleRegistryTest, AReusedSlotGetsANewGenerationSoOldHandlesStayDead) {
  HandleRegistry registry;
  int first = 1, second = 2;
  void* old_handle = Added(registry, HandleKind::kSendComm, &first);
  void* old_request = HandleRegistry::RequestHandle(old_handle, 3);
  ASSERT_EQ(registry.Remove(old_handle, HandleKind::kSendComm), &first);
  void* new_handle = Added(registry, HandleKind::kSendComm, &second);
  // Same slot (last in, first out), another generation.
  EXPECT_EQ(Bits(new_handle) & 0xffffffffu, Bits(old_handle) & 0xffffffffu);
  EXPECT_NE(new_handle, old_handle);
  EXPECT_EQ(registry.Find(old_handle, HandleKind::kSendComm), nullptr);
  EXPECT_EQ(registry.Remove(old_handle, HandleKind::kSendComm), nullptr);
  RequestRef ref{};
  EXPECT_FALSE(registry.FindRequest(old_request, &ref));
  EXPECT_EQ(registry.Find(new_handle, HandleKind::kSendComm), &second);
}

TEST(HandleRegistryTest, RequestHandlesLiveExactlyAsLongAsTheirComm) {
  HandleRegistry registry;
  int comm = 0, context = 0;
  void* handle = Added(registry, HandleKind::kRecvComm, &comm);
  void* request = HandleRegistry::RequestHandle(handle, 31);
  RequestRef ref{};
  ASSERT_TRUE(registry.FindRequest(request, &ref));
  EXPECT_EQ(ref.comm_kind, HandleKind::kRecvComm);
  EXPECT_EQ(ref.comm, &comm);
  EXPECT_EQ(ref.index, 31u);
  // A request is not a comm, a comm not a request.
  EXPECT_EQ(registry.Find(request, HandleKind::kRecvComm), nullptr);
  EXPECT_EQ(registry.Remove(request, HandleKind::kRecvComm), nullptr);
  EXPECT_FALSE(registry.FindRequest(handle, &ref));
  // Only comms have requests, and only so many.
  void* ctx = Added(registry, HandleKind::kContext, &context);
  EXPECT_EQ(HandleRegistry::RequestHandle(ctx, 0), nullptr);
  EXPECT_EQ(HandleRegistry::RequestHandle(handle, HandleRegistry::kMaxRequestsPerComm), nullptr);
  EXPECT_EQ(HandleRegistry::RequestHandle(request, 0), nullptr);
  EXPECT_EQ(HandleRegistry::RequestHandle(&comm, 0), nullptr);
  ASSERT_EQ(registry.Remove(handle, HandleKind::kRecvComm), &comm);
  EXPECT_FALSE(registry.FindRequest(request, &ref));
}

TEST(HandleRegistryTest, RemovingAnOwnerRemovesWhatItOwns) {
  HandleRegistry registry;
  int comm = 0, other = 0, mr[3] = {};
  void* owner = Added(registry, HandleKind::kSendComm, &comm);
  void* other_owner = Added(registry, HandleKind::kRecvComm, &other);
  void* mh[3];
  for (int i = 0; i < 3; ++i) mh[i] = Added(registry, HandleKind::kMemory, &mr[i], owner);
  // Only its owner removes an mhandle.
  EXPECT_EQ(registry.Remove(mh[0], HandleKind::kMemory, other_owner), nullptr);
  EXPECT_EQ(registry.Remove(mh[0], HandleKind::kMemory, owner), &mr[0]);
  std::vector<OwnedObject> owned;
  EXPECT_EQ(registry.Remove(owner, HandleKind::kSendComm, nullptr, &owned), &comm);
  ASSERT_EQ(owned.size(), 2u);
  for (const OwnedObject& o : owned) {
    EXPECT_EQ(o.kind, HandleKind::kMemory);
    EXPECT_TRUE(o.object == &mr[1] || o.object == &mr[2]);
  }
  EXPECT_EQ(registry.Find(mh[1], HandleKind::kMemory), nullptr);
  EXPECT_EQ(registry.Find(mh[2], HandleKind::kMemory), nullptr);
  EXPECT_EQ(registry.Find(other_owner, HandleKind::kRecvComm), &other);
  // No new registration on a closed owner.
  EXPECT_FALSE(registry.Add(HandleKind::kMemory, &mr[0], owner).ok());
  EXPECT_EQ(registry.live(), 1u);
}

TEST(HandleRegistryTest, AFullTableIsAnErrorUntilAHandleGoes) {
  HandleRegistry registry(4);
  int objects[5];
  void* handles[4];
  for (int i = 0; i < 4; ++i) handles[i] = Added(registry, HandleKind::kContext, &objects[i]);
  Result<void*> full = registry.Add(HandleKind::kContext, &objects[4]);
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.status().message().find("handle table is full"), std::string::npos);
  ASSERT_EQ(registry.Remove(handles[2], HandleKind::kContext), &objects[2]);
  EXPECT_TRUE(registry.Add(HandleKind::kContext, &objects[4]).ok());
}

TEST(HandleRegistryTest, RandomValuesNameNothing) {
  HandleRegistry registry;
  std::vector<int> objects(2048);
  for (int& object : objects) Added(registry, HandleKind::kSendComm, &object);
  std::mt19937_64 rng(11);
  RequestRef ref{};
  for (int i = 0; i < 200000; ++i) {
    const uint64_t value = rng() | (i % 2 == 0 ? uint64_t{1} << 63 : 0);
    const auto* handle = reinterpret_cast<const void*>(static_cast<uintptr_t>(value));
    for (HandleKind kind : {HandleKind::kSendComm, HandleKind::kMemory}) {
      ASSERT_EQ(registry.Find(handle, kind), nullptr) << std::hex << value;
    }
    ASSERT_FALSE(registry.FindRequest(handle, &ref)) << std::hex << value;
  }
}

TEST(HandleRegistryTest, LookupsRunWhileOtherHandlesComeAndGo) {
  HandleRegistry registry;
  std::vector<int> stable(64);
  std::vector<void*> handles;
  handles.reserve(stable.size());
  for (int& object : stable) handles.push_back(Added(registry, HandleKind::kRecvComm, &object));
  std::atomic<bool> stop{false};
  std::atomic<int> misses{0};
  std::vector<std::thread> readers;
  readers.reserve(3);
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      RequestRef ref{};
      while (!stop.load(std::memory_order_relaxed)) {
        for (size_t i = 0; i < handles.size(); ++i) {
          misses += registry.Find(handles[i], HandleKind::kRecvComm) != &stable[i] ? 1 : 0;
          misses += registry.FindRequest(HandleRegistry::RequestHandle(handles[i], 1), &ref) &&
                            ref.comm == &stable[i]
                        ? 0
                        : 1;
        }
      }
    });
  }
  int churn = 0;
  for (int i = 0; i < 20000; ++i) {
    void* comm = Added(registry, HandleKind::kSendComm, &churn);
    void* mh = Added(registry, HandleKind::kMemory, &churn, comm);
    ASSERT_NE(mh, nullptr);
    ASSERT_EQ(registry.Remove(comm, HandleKind::kSendComm), &churn);
  }
  stop = true;
  for (std::thread& reader : readers) reader.join();
  EXPECT_EQ(misses.load(), 0);
  EXPECT_EQ(registry.live(), stable.size());
}

}  // namespace
}  // namespace devmem::api
