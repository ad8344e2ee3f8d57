// A send comm with devmem TX on real loopback sockets: CUDA registrations are bound through the
// binder (its CUDA and bind steps faked: no GPU or netmem-TX NIC here), sends go out as devmem
// TX sendmsg calls, and the kernel's refusal of them (loopback has no TX binding, EINVAL from
// net/core/devmem.c net_devmem_get_binding) fails the comm with a clear error instead of a
// hang or a host-pointer send of a GPU offset.
#include <gtest/gtest.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <vector>

#include "plugin/abi/net_abi.h"
#include "plugin/transport/comm.h"
#include "plugin/transport/request.h"
#include "tests/common/comm_pair.h"

namespace devmem {
namespace {

constexpr uint64_t kFakeAllocation = 0x7f0000000000;
constexpr size_t kFakeAllocationBytes = 64 << 20;

TxBinderOps FakeCudaOps(bool refuse_bind) {
  TxBinderOps ops;
  ops.allocation_of = [](uint64_t) -> Result<TxBinderOps::Allocation> {
    return TxBinderOps::Allocation{kFakeAllocation, kFakeAllocationBytes};
  };
  ops.export_dmabuf = [](uint64_t, size_t, DmabufMapping) -> Result<UniqueFd> {
    return UniqueFd(static_cast<int>(syscall(SYS_memfd_create, "fake-dmabuf", 0)));
  };
  ops.bind = [refuse_bind](int, int) -> Result<TxBinderOps::Bound> {
    if (refuse_bind) {
      return Status::Error(ErrorKind::kSystem, "kernel says: Driver does not support netmem TX");
    }
    return TxBinderOps::Bound{std::make_shared<int>(0), 4242};
  };
  return ops;
}

// `receiver_buffer`: SO_RCVBUF of the receiving data sockets (0: default).
testing::CommPair MakeTxPair(TxBinder* binder, bool require_tx, int receiver_buffer = 0) {
  ConnectionParams params = testing::TestParams(2, 1, 64 << 10);
  params.proxy_bytes = 1 << 30;  // the calling thread sends
  ConnectionParams send_params = params;
  send_params.devmem_tx_ifindex = static_cast<int>(if_nametoindex("lo"));
  send_params.require_tx = require_tx;
  send_params.tx_binder = binder;
  Result<testing::CommPair> pair =
      testing::CreateZeroCopyCommPair(params, send_params, receiver_buffer);
  EXPECT_TRUE(pair.ok()) << pair.status().message();
  return pair.ok() ? std::move(pair).value() : testing::CommPair();
}

TEST(DevmemTxSendCommTest, TheKernelsRefusalOfADevmemSendFailsTheCommWithItsReason) {
  TxBinder binder(FakeCudaOps(/*refuse_bind=*/false));
  testing::CommPair pair = MakeTxPair(&binder, false);
  ASSERT_NE(pair.send, nullptr);
  // A "CUDA" buffer inside the fake allocation: bound, so registering needs no CUDA driver.
  void* buffer = reinterpret_cast<void*>(kFakeAllocation + (1 << 20));
  Result<MemoryRegion*> region = pair.send->Register(buffer, 4 << 20, nccl::kPtrCuda);
  ASSERT_TRUE(region.ok()) << region.status().message();
  std::unique_ptr<MemoryRegion> owned(region.value());
  ASSERT_TRUE(owned->devmem_tx());
  EXPECT_EQ(owned->tx_dmabuf_id, 4242u);
  EXPECT_EQ(owned->tx_data_offset, uint64_t{1} << 20);
  // Small enough to go inline on a host buffer, but a devmem buffer never goes inline (its
  // bytes are not on the host): it goes to a data socket, where the kernel refuses the id.
  Result<Request*> sent =
      pair.send->PostSend(static_cast<char*>(buffer) + 4096, 512, 1, owned.get());
  Status failure = Status::Ok();
  if (!sent.ok()) {
    failure = sent.status();
  } else {
    ASSERT_NE(sent.value(), nullptr);
    bool done = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (failure.ok() && !done && std::chrono::steady_clock::now() < deadline) {
      failure = pair.send->Test(sent.value(), &done, nullptr);
    }
    EXPECT_FALSE(done) << "a devmem send the kernel refused was reported done";
  }
  ASSERT_FALSE(failure.ok()) << "no error within 10 s";
  EXPECT_NE(failure.message().find("devmem TX sendmsg refused (Invalid argument)"),
            std::string::npos)
      << failure.message();
}

TEST(DevmemTxSendCommTest, ARefusedBindingStagesUnlessTxIsRequired) {
  TxBinder refusing(FakeCudaOps(/*refuse_bind=*/true));
  testing::CommPair required = MakeTxPair(&refusing, /*require_tx=*/true);
  ASSERT_NE(required.send, nullptr);
  void* buffer = reinterpret_cast<void*>(kFakeAllocation);
  Result<MemoryRegion*> refused = required.send->Register(buffer, 1 << 20, nccl::kPtrCuda);
  ASSERT_FALSE(refused.ok());
  const std::string& message = refused.status().message();
  EXPECT_NE(message.find("NCCL_DEVMEM_REQUIRE_TX=1"), std::string::npos) << message;
  EXPECT_NE(message.find("netmem TX"), std::string::npos) << message;
  // Not required: the buffer falls back to staging, which needs the CUDA driver. Without one
  // (CPU-only machines) that is the error; the bind refusal itself is not.
  testing::CommPair fallback = MakeTxPair(&refusing, /*require_tx=*/false);
  ASSERT_NE(fallback.send, nullptr);
  Result<MemoryRegion*> staged = fallback.send->Register(buffer, 1 << 20, nccl::kPtrCuda);
  if (staged.ok()) {
    std::unique_ptr<MemoryRegion> owned(staged.value());
    EXPECT_FALSE(owned->devmem_tx());
  } else {
    EXPECT_EQ(staged.status().message().find("NCCL_DEVMEM_REQUIRE_TX"), std::string::npos);
    EXPECT_NE(staged.status().message().find("CUDA"), std::string::npos)
        << staged.status().message();
  }
}

// Host buffers of a devmem TX comm (NCCL's LL buffers stay in host memory, net.cc:881) go out
// by plain send: done once the kernel copied them into the socket, not held until the peer
// reads them as a zero-copy send would be (plugin/transport/zerocopy.h).
TEST(DevmemTxSendCommTest, HostBuffersOfADevmemTxCommAreSentByCopy) {
  TxBinder binder(FakeCudaOps(false));
  testing::CommPair pair = MakeTxPair(&binder, false, /*receiver_buffer=*/4096);
  ASSERT_NE(pair.send, nullptr);
  std::vector<char> out(48 << 10, 'h');
  Result<Request*> sent = pair.send->PostSend(out.data(), out.size(), 1, nullptr);
  ASSERT_TRUE(sent.ok() && sent.value() != nullptr) << sent.status().message();
  bool done = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!done && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(pair.send->Test(sent.value(), &done, nullptr).ok());
  }
  EXPECT_TRUE(done) << "a host send waited for the receiver: it went out with MSG_ZEROCOPY";
}

TEST(DevmemTxSendCommTest, AnMhandleBoundForTxIsRefusedOnACommWithoutIt) {
  TxBinder binder(FakeCudaOps(false));
  testing::CommPair tx = MakeTxPair(&binder, false);
  ASSERT_NE(tx.send, nullptr);
  void* buffer = reinterpret_cast<void*>(kFakeAllocation);
  Result<MemoryRegion*> region = tx.send->Register(buffer, 1 << 20, nccl::kPtrCuda);
  ASSERT_TRUE(region.ok()) << region.status().message();
  std::unique_ptr<MemoryRegion> owned(region.value());
  owned->tx_ifindex += 1000;  // as if bound for another NIC's comm
  Result<Request*> sent = tx.send->PostSend(buffer, 4096, 1, owned.get());
  ASSERT_FALSE(sent.ok());
  EXPECT_NE(sent.status().message().find("bound for devmem TX on ifindex"), std::string::npos)
      << sent.status().message();
}

}  // namespace
}  // namespace devmem
