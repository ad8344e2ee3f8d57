// Devmem TX sends and the binder that binds NCCL's CUDA send buffers, on the real kernel where
// it answers (loopback has no netmem TX, so every refusal here is the kernel's own) and with
// the CUDA steps behind TxBinderOps where no GPU exists.
#include "plugin/devmem/devmem_tx.h"

#include <gtest/gtest.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "plugin/devmem/uapi.h"
#include "plugin/setup/tx_setup.h"
#include "tests/common/tcp_pair.h"

namespace devmem {
namespace {

// The kernel takes exactly one u32 dmabuf id in an SCM_DEVMEM_DMABUF cmsg of length
// CMSG_LEN(sizeof(u32)), anything else is EINVAL (net/core/sock.c __sock_cmsg_send, case
// SCM_DEVMEM_DMABUF), and reads iov_base as a byte offset into the bound dmabuf
// (Documentation/networking/devmem.rst, "TX path"; ncdevmem.c do_client).
TEST(DevmemTxMessageTest, CarriesTheIdInOneU32CmsgAndTheOffsetsAsIovBases) {
  iovec iov[2];
  DevmemTxControl control;
  msghdr msg;
  BuildDevmemTxMessage(0xabcdef01u, (uint64_t{3} << 32) + 4096, 65537, iov, &control, &msg);
  // Two iovecs, the payload and an empty one: ITER_IOVEC on every devmem TX kernel (a single
  // iovec becomes ITER_UBUF, lib/iov_iter.c __import_iovec, which zerocopy_fill_skb_from_devmem
  // in net/core/datagram.c refused with EFAULT before the single-iovec fix).
  ASSERT_EQ(msg.msg_iov, iov);
  EXPECT_EQ(msg.msg_iovlen, 2u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(iov[0].iov_base), (uint64_t{3} << 32) + 4096);
  EXPECT_EQ(iov[0].iov_len, 65537u);
  EXPECT_EQ(iov[1].iov_len, 0u);
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  ASSERT_NE(cmsg, nullptr);
  EXPECT_EQ(cmsg->cmsg_level, SOL_SOCKET);
  EXPECT_EQ(cmsg->cmsg_type, 79);  // SCM_DEVMEM_DMABUF, include/uapi/asm-generic/socket.h
  EXPECT_EQ(cmsg->cmsg_len, CMSG_LEN(sizeof(uint32_t)));
  uint32_t id = 0;
  memcpy(&id, CMSG_DATA(cmsg), sizeof(id));
  EXPECT_EQ(id, 0xabcdef01u);
  EXPECT_EQ(CMSG_NXTHDR(&msg, cmsg), nullptr);  // exactly one cmsg
  // One byte, the case that once went out as a single iovec: still two entries.
  BuildDevmemTxMessage(1, 8, 1, iov, &control, &msg);
  EXPECT_EQ(msg.msg_iovlen, 2u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(iov[0].iov_base), 8u);
  EXPECT_EQ(iov[0].iov_len, 1u);
  EXPECT_EQ(iov[1].iov_len, 0u);
}

// The kernel's sendmsg accepts the two-entry form with an empty second entry as one payload:
// sent as plain TCP from real memory (iov_base an address here, not a dmabuf offset), the
// receiver gets exactly the first entry's bytes, for one byte and for many.
TEST(DevmemTxMessageTest, TheEmptySecondEntryAddsNothingToWhatTheKernelSends) {
  auto [client, server] = testing::TcpPair();
  const char payload[] = "devmem";
  for (size_t length : {size_t{1}, sizeof(payload)}) {
    iovec iov[2];
    DevmemTxControl control;
    msghdr msg;
    BuildDevmemTxMessage(0, reinterpret_cast<uintptr_t>(payload), length, iov, &control, &msg);
    msg.msg_control = nullptr;  // plain TCP: no SCM_DEVMEM_DMABUF
    msg.msg_controllen = 0;
    ASSERT_EQ(sendmsg(client.get(), &msg, MSG_NOSIGNAL), static_cast<ssize_t>(length));
    char received[sizeof(payload)] = {};
    ASSERT_EQ(recv(server.get(), received, length, MSG_WAITALL),
              static_cast<ssize_t>(length));
    EXPECT_EQ(memcmp(received, payload, length), 0);
  }
}

// A loopback socket has no TX binding: the real kernel refuses the id with EINVAL
// (net/core/devmem.c net_devmem_get_binding), and nothing is sent.
TEST(DevmemTxSendTest, TheKernelRefusesAnIdThatIsNoTxBindingOfTheSocket) {
  auto [client, server] = testing::TcpPair();
  int one = 1;
  ASSERT_EQ(setsockopt(client.get(), SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)), 0);
  errno = 0;
  EXPECT_EQ(SendDevmemTx(client.get(), 12345, 0, 4096), -1);
  EXPECT_EQ(errno, EINVAL);
  const std::string described = DescribeDevmemTxError(EINVAL);
  EXPECT_NE(described.find("no TX binding"), std::string::npos) << described;
  char byte;
  EXPECT_EQ(recv(server.get(), &byte, 1, MSG_DONTWAIT), -1);  // nothing arrived
  EXPECT_EQ(errno, EAGAIN);
}

TEST(DevmemTxSendTest, EveryRefusalTheKernelDocumentsIsDescribed) {
  EXPECT_NE(DescribeDevmemTxError(ENODEV).find("another device"), std::string::npos);
  EXPECT_NE(DescribeDevmemTxError(EHOSTUNREACH).find("no route"), std::string::npos);
  EXPECT_NE(DescribeDevmemTxError(EFAULT).find("past the bound dmabuf"), std::string::npos);
  EXPECT_NE(DescribeDevmemTxError(EPIPE).find("errno 32"), std::string::npos);
}

// The binder's bookkeeping over CUDA and bind stand-ins that record what was asked of them.
struct FakeTxWorld {
  struct Call {
    int ifindex;
    uint64_t base;
    size_t bytes;
    DmabufMapping mapping = DmabufMapping::kDefault;
  };
  std::vector<TxBinderOps::Allocation> allocations;  // what "CUDA" allocated
  std::vector<Call> binds;
  uint32_t next_id = 7;
  bool refuse_bind = false;
  bool refuse_export = false;
  // A coherent (Grace/C2C) host: a PCIe-mapped export is made, then refused at attach with
  // 524 (NVIDIA open-gpu-kernel-modules kernel-open/nvidia/nv-dmabuf.c nv_dma_buf_attach,
  // "topology not supported for mapping type FORCE_PCIE"; net/core/devmem.c
  // net_devmem_bind_dmabuf reports "Failed to bind dmabuf to device").
  bool coherent_host = false;

  TxBinderOps Ops() {
    TxBinderOps ops;
    ops.allocation_of = [this](uint64_t address) -> Result<TxBinderOps::Allocation> {
      for (const auto& a : allocations) {
        if (address >= a.base && address < a.base + a.bytes) return a;
      }
      return Status::Error(ErrorKind::kSystem, "cuMemGetAddressRange failed: not CUDA memory");
    };
    ops.export_dmabuf = [this](uint64_t base, size_t bytes,
                               DmabufMapping mapping) -> Result<UniqueFd> {
      if (refuse_export) return Status::Error(ErrorKind::kSystem, "export refused");
      UniqueFd fd(static_cast<int>(syscall(SYS_memfd_create, "fake-dmabuf", 0)));
      binds.push_back({0, base, bytes, mapping});
      return fd;
    };
    ops.bind = [this](int ifindex, int fd) -> Result<TxBinderOps::Bound> {
      if (refuse_bind)
        return Status::Error(ErrorKind::kSystem, "Driver does not support netmem TX");
      if (coherent_host && binds.back().mapping == DmabufMapping::kPcieBar1) {
        return Status::Error(ErrorKind::kSystem,
                             "bind-tx: Failed to bind dmabuf to device (errno 524)");
      }
      EXPECT_GE(fd, 0);
      binds.back().ifindex = ifindex;
      return TxBinderOps::Bound{std::make_shared<int>(0), next_id++};
    };
    return ops;
  }
};

TEST(TxBinderTest, BindsEachAllocationOncePerNicAndMapsOffsetsWithinIt) {
  FakeTxWorld world;
  world.allocations = {{0x7f0000200000, 8 << 20}, {0x7f0001000000, 4 << 20}};
  TxBinder binder(world.Ops());
  // NCCL's protocol buffers of one connection: slices of one allocation.
  Result<TxMapping> simple = binder.Map(3, reinterpret_cast<void*>(0x7f0000200000 + 4096), 4 << 20);
  Result<TxMapping> ll =
      binder.Map(3, reinterpret_cast<void*>(0x7f0000200000 + (5 << 20)), 1 << 20);
  ASSERT_TRUE(simple.ok()) << simple.status().message();
  ASSERT_TRUE(ll.ok()) << ll.status().message();
  ASSERT_EQ(world.binds.size(), 1u);  // one export and bind for the allocation
  EXPECT_EQ(world.binds[0].ifindex, 3);
  EXPECT_EQ(world.binds[0].base, 0x7f0000200000u);
  EXPECT_EQ(world.binds[0].bytes, size_t{8} << 20);
  EXPECT_EQ(simple->dmabuf_id, ll->dmabuf_id);
  EXPECT_EQ(simple->data_offset, 4096u);
  EXPECT_EQ(ll->data_offset, uint64_t{5} << 20);
  // Another NIC binds the same allocation again (a binding names one device); another
  // allocation gets its own.
  Result<TxMapping> other_nic = binder.Map(4, reinterpret_cast<void*>(0x7f0000200000), 4096);
  Result<TxMapping> other_alloc = binder.Map(3, reinterpret_cast<void*>(0x7f0001000000), 4096);
  ASSERT_TRUE(other_nic.ok() && other_alloc.ok());
  EXPECT_EQ(world.binds.size(), 3u);
  EXPECT_NE(other_nic->dmabuf_id, simple->dmabuf_id);
  EXPECT_NE(other_alloc->dmabuf_id, simple->dmabuf_id);
  EXPECT_EQ(binder.live_bindings(), 3u);
}

TEST(TxBinderTest, ABindingLastsAsLongAsTheRegistrationsThatUseIt) {
  FakeTxWorld world;
  world.allocations = {{0x10000000, 2 << 20}};
  TxBinder binder(world.Ops());
  {
    Result<TxMapping> a = binder.Map(3, reinterpret_cast<void*>(0x10000000), 4096);
    Result<TxMapping> b = binder.Map(3, reinterpret_cast<void*>(0x10001000), 4096);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(binder.live_bindings(), 1u);
  }  // both deregistered: the binding (its netlink socket) goes
  EXPECT_EQ(binder.live_bindings(), 0u);
  Result<TxMapping> again = binder.Map(3, reinterpret_cast<void*>(0x10000000), 4096);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(world.binds.size(), 2u);  // bound afresh
}

// A new allocation at the address of a freed one (its old registration still alive) is told
// apart by CUDA's buffer id and bound afresh: the old binding would send the old memory.
TEST(TxBinderTest, ANewAllocationAtAReusedAddressGetsItsOwnBinding) {
  FakeTxWorld world;
  world.allocations = {{0x40000000, 2 << 20, /*buffer_id=*/11}};
  TxBinder binder(world.Ops());
  Result<TxMapping> old_one = binder.Map(3, reinterpret_cast<void*>(0x40000000), 4096);
  ASSERT_TRUE(old_one.ok());
  world.allocations = {{0x40000000, 2 << 20, /*buffer_id=*/12}};
  Result<TxMapping> new_one = binder.Map(3, reinterpret_cast<void*>(0x40000000), 4096);
  ASSERT_TRUE(new_one.ok());
  EXPECT_EQ(world.binds.size(), 2u);
  EXPECT_NE(new_one->dmabuf_id, old_one->dmabuf_id);
}

TEST(TxBinderTest, EachRefusalNamesTheStepThatFailed) {
  FakeTxWorld world;
  world.allocations = {{0x20000000, 2 << 20}, {0x30000800, 1 << 20}};
  TxBinder binder(world.Ops());
  Result<TxMapping> host = binder.Map(3, reinterpret_cast<void*>(0x1000), 64);
  ASSERT_FALSE(host.ok());
  EXPECT_NE(host.status().message().find("finding the CUDA allocation"), std::string::npos);
  Result<TxMapping> straddles =
      binder.Map(3, reinterpret_cast<void*>(0x20000000 + (1 << 20)), 2 << 20);
  ASSERT_FALSE(straddles.ok());
  EXPECT_NE(straddles.status().message().find("not inside one CUDA allocation"), std::string::npos);
  Result<TxMapping> unaligned = binder.Map(3, reinterpret_cast<void*>(0x30000800), 64);
  ASSERT_FALSE(unaligned.ok());
  EXPECT_NE(unaligned.status().message().find("not page-aligned"), std::string::npos);
  world.refuse_export = true;
  Result<TxMapping> no_export = binder.Map(3, reinterpret_cast<void*>(0x20000000), 64);
  ASSERT_FALSE(no_export.ok());
  EXPECT_NE(no_export.status().message().find("exporting and binding CUDA allocation"),
            std::string::npos);
  EXPECT_NE(no_export.status().message().find("PCIe BAR1 mapping: export refused"),
            std::string::npos);
  EXPECT_NE(no_export.status().message().find("default mapping: export refused"),
            std::string::npos);
  world.refuse_export = false;
  world.refuse_bind = true;
  Result<TxMapping> no_bind = binder.Map(3, reinterpret_cast<void*>(0x20000000), 64);
  ASSERT_FALSE(no_bind.ok());
  const std::string& message = no_bind.status().message();
  EXPECT_NE(message.find("bind-tx refused"), std::string::npos) << message;
  EXPECT_NE(message.find("netmem TX"), std::string::npos) << message;
  EXPECT_EQ(binder.live_bindings(), 0u);
}

// N2 for TX: where the attach refuses the PCIe mapping (coherent hosts), the binder exports
// again with the driver's default mapping and binds that.
TEST(TxBinderTest, APcieMappingTheNicCannotAttachIsExportedAgainWithTheDefault) {
  FakeTxWorld world;
  world.allocations.push_back({0x7f0000200000, size_t{8} << 20, 1});
  world.coherent_host = true;
  TxBinder binder(world.Ops());
  Result<TxMapping> mapped = binder.Map(3, reinterpret_cast<void*>(0x7f0000200000 + 4096), 64);
  ASSERT_TRUE(mapped.ok()) << mapped.status().message();
  ASSERT_EQ(world.binds.size(), 2u);
  EXPECT_EQ(world.binds[0].mapping, DmabufMapping::kPcieBar1);  // tried first, refused
  EXPECT_EQ(world.binds[1].mapping, DmabufMapping::kDefault);
  EXPECT_EQ(world.binds[1].ifindex, 3);
  EXPECT_EQ(mapped->data_offset, 4096u);
  EXPECT_EQ(binder.live_bindings(), 1u);
}

// The real bind-tx behind the binder (a memfd stands in for the exported GPU memory, which
// the kernel refuses before it looks at it): on loopback the kernel's own refusal comes back
// with its errno and message (net/core/netdev-genl.c netdev_nl_bind_tx_doit).
TEST(TxBinderTest, TheKernelsRefusalOfBindTxReachesTheCaller) {
  FakeTxWorld world;
  world.allocations = {{0x20000000, 2 << 20}};
  TxBinderOps ops = world.Ops();
  ops.bind = RealTxBinderOps().bind;
  TxBinder binder(std::move(ops));
  const int lo = static_cast<int>(if_nametoindex("lo"));
  ASSERT_GT(lo, 0);
  Result<TxMapping> mapping = binder.Map(lo, reinterpret_cast<void*>(0x20000000), 4096);
  ASSERT_FALSE(mapping.ok());
  const std::string& message = mapping.status().message();
  EXPECT_NE(message.find("bind-tx"), std::string::npos) << message;
  EXPECT_NE(message.find("errno"), std::string::npos) << message;
}

// A connection keeps devmem TX only where the kernel's route to the peer leaves through the
// bound NIC (else every sendmsg would be ENODEV, net/core/devmem.c net_devmem_get_binding).
// netdev_nl_bind_tx_doit (net/core/netdev-genl.c) answers ENODEV, with only the ifindex
// marked, for an ifindex no device has (netdev_get_by_index_lock) or a device that is not
// present (netif_device_present); the old probe counted every refusal but "netmem TX" and
// errno 95 as "supported". Only dma_buf_get's EINVAL for the memfd means ready.
TEST(TxReadinessTest, TheNetmemTxProbeCountsOnlyTheDmabufRefusalAsSupported) {
  Status missing = ProbeNetmemTx(0x7ffffff0);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("errno 19"), std::string::npos) << missing.message();
  EXPECT_NE(missing.message().find("what it means: no NIC has this ifindex"), std::string::npos)
      << missing.message();
  Status lo = ProbeNetmemTx(static_cast<int>(if_nametoindex("lo")));
  ASSERT_FALSE(lo.ok());
  EXPECT_NE(lo.message().find("Driver does not support netmem TX"), std::string::npos)
      << lo.message();
}

TEST(TxReadinessTest, LoopbackAndAMissingGpuAreReasonsWithoutAProbe) {
  NetDevice lo;
  lo.name = "lo";
  lo.ifindex = static_cast<int>(if_nametoindex("lo"));
  lo.loopback = true;
  EXPECT_NE(TxUnavailableReason(lo, true, "").find("loopback"), std::string::npos);
  NetDevice nic = lo;
  nic.loopback = false;
  EXPECT_EQ(TxUnavailableReason(nic, false, "no GPU"), "no GPU");
  // Loopback's driver has no netmem TX: the probe says so.
  const std::string reason = TxUnavailableReason(nic, true, "");
  EXPECT_NE(reason.find("bind-tx refused"), std::string::npos) << reason;
}

}  // namespace
}  // namespace devmem
