// NIC control against the real kernel: the netdev family, dev-get, queue-get, and bind-rx's
// refusal on devices without devmem support (veth, lo), with the kernel's errno text.
#include "plugin/devmem/netdev_netlink.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "plugin/core/net_device.h"
#include "plugin/core/unique_fd.h"
#include "plugin/devmem/flow_steering.h"
#include "plugin/devmem/frag_parser.h"
#include "plugin/devmem/nic_ethtool.h"
#include "plugin/devmem/token_batch.h"
#include "plugin/devmem/uapi.h"
#include "plugin/setup/readiness.h"
#include "plugin/setup/rx_setup.h"
#include "tests/common/tcp_pair.h"

namespace devmem {
namespace {

TEST(NetdevNetlinkTest, FamilyResolvesAndDevGetAnswersForLoopback) {
  Result<NetdevNetlink> netdev = NetdevNetlink::Open();
  ASSERT_TRUE(netdev.ok()) << netdev.status().message();
  EXPECT_GT(netdev->family_id(), 0);
  Result<bool> known = netdev->DeviceKnown(static_cast<int>(if_nametoindex("lo")));
  ASSERT_TRUE(known.ok()) << known.status().message();
  EXPECT_TRUE(known.value());
  Result<bool> missing = netdev->DeviceKnown(0x7ffffff0);
  ASSERT_TRUE(missing.ok()) << missing.status().message();
  EXPECT_FALSE(missing.value());
}

// A genl do-request is answered by two datagrams, the reply and then the ACK
// (net/netlink/af_netlink.c netlink_rcv_skb: netlink_ack for NLM_F_ACK after the doit's
// genlmsg_reply); a dump by its replies and NLMSG_DONE. Each request on a reused socket must
// read exactly its own answer: before the fix the second dev-get read the first one's ACK,
// saw no reply and called lo unknown, and a queue-get after a dev-get returned nothing.
TEST(NetdevNetlinkTest, RequestsOnOneSocketEachReadTheirOwnAnswer) {
  const int lo = static_cast<int>(if_nametoindex("lo"));
  Result<NetdevNetlink> fresh = NetdevNetlink::Open();
  ASSERT_TRUE(fresh.ok()) << fresh.status().message();
  Result<std::vector<RxQueueInfo>> expected_queues = fresh->RxQueues(lo);
  ASSERT_TRUE(expected_queues.ok()) << expected_queues.status().message();

  Result<NetdevNetlink> netdev = NetdevNetlink::Open();
  ASSERT_TRUE(netdev.ok()) << netdev.status().message();
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    Result<bool> known = netdev->DeviceKnown(lo);
    ASSERT_TRUE(known.ok()) << known.status().message();
    EXPECT_TRUE(known.value());
    Result<bool> again = netdev->DeviceKnown(lo);
    ASSERT_TRUE(again.ok()) << again.status().message();
    EXPECT_TRUE(again.value());
    Result<std::vector<RxQueueInfo>> queues = netdev->RxQueues(lo);
    ASSERT_TRUE(queues.ok()) << queues.status().message();
    ASSERT_EQ(queues->size(), expected_queues->size());
    for (size_t i = 0; i < queues->size(); ++i) {
      EXPECT_EQ(queues.value()[i].id, expected_queues.value()[i].id);
    }
    // An error answer (ENODEV from netdev_nl_dev_get_doit) between them changes nothing either.
    Result<bool> missing = netdev->DeviceKnown(0x7ffffff0);
    ASSERT_TRUE(missing.ok()) << missing.status().message();
    EXPECT_FALSE(missing.value());
  }
}

// The socket fds of this process, by number.
std::set<int> SocketFds() {
  std::set<int> fds;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return fds;
  while (dirent* entry = readdir(dir)) {
    char target[64] = {};
    const std::string link = std::string("/proc/self/fd/") + entry->d_name;
    if (readlink(link.c_str(), target, sizeof(target) - 1) > 0 &&
        std::string(target).rfind("socket:", 0) == 0) {
      fds.insert(atoi(entry->d_name));
    }
  }
  closedir(dir);
  return fds;
}

// A binding is its netlink socket: the kernel unbinds only when the socket's last reference
// closes (net/core/netdev-genl.c netdev_nl_sock_priv_destroy). So the socket is close-on-exec,
// and a child forked without exec holds a placeholder instead of it.
TEST(NetdevNetlinkTest, ItsSocketIsCloseOnExecAndNotHeldByAForkedChild) {
  const std::set<int> before = SocketFds();
  Result<NetdevNetlink> netdev = NetdevNetlink::Open();
  ASSERT_TRUE(netdev.ok()) << netdev.status().message();
  std::vector<int> opened;
  for (int fd : SocketFds()) {
    if (before.count(fd) == 0) opened.push_back(fd);
  }
  ASSERT_EQ(opened.size(), 1u);
  const int fd = opened.front();
  EXPECT_NE(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  int report[2];
  ASSERT_EQ(pipe2(report, O_CLOEXEC), 0);
  const pid_t child = fork();
  if (child == 0) {
    struct stat st {};
    const char what = fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) ? 'p' : 's';
    (void)!write(report[1], &what, 1);
    _exit(0);
  }
  char what = '?';
  EXPECT_EQ(read(report[0], &what, 1), 1);
  EXPECT_EQ(what, 'p');  // the child's copy is /dev/null, not the netlink socket
  int status = 0;
  waitpid(child, &status, 0);
  close(report[0]);
  close(report[1]);
  // The parent's socket still works.
  Result<bool> known = netdev->DeviceKnown(static_cast<int>(if_nametoindex("lo")));
  ASSERT_TRUE(known.ok()) << known.status().message();
  EXPECT_TRUE(known.value());
}

// A veth pair in the test's namespace, removed at the end.
class VethTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (CAP_NET_ADMIN) to create a veth";
    name_ = "dmnl" + std::to_string(getpid() % 100000);
    std::string cmd = "ip link add " + name_ + " type veth peer name " + name_ +
                      "p && ip link set " + name_ + " up";
    ASSERT_EQ(system(cmd.c_str()), 0);
    ifindex_ = static_cast<int>(if_nametoindex(name_.c_str()));
    ASSERT_GT(ifindex_, 0);
  }
  void TearDown() override {
    if (!name_.empty()) {
      system(("ip link del " + name_ + " 2>/dev/null").c_str());
      // The host-wide flow-rule lock file of this test's interface (flow_rule_lock.h).
      unlink(("/run/nccl-net-devmem/flowrules." + name_ + ".lock").c_str());
    }
  }
  std::string name_;
  int ifindex_ = 0;
};

TEST_F(VethTest, QueueGetListsTheVethRxQueues) {
  Result<NetdevNetlink> netdev = NetdevNetlink::Open();
  ASSERT_TRUE(netdev.ok()) << netdev.status().message();
  Result<std::vector<RxQueueInfo>> queues = netdev->RxQueues(ifindex_);
  ASSERT_TRUE(queues.ok()) << queues.status().message();
  // veth registers its RX queues with the netdev family; none is bound to a dmabuf.
  ASSERT_GE(queues->size(), 1u);
  for (const RxQueueInfo& q : queues.value()) EXPECT_EQ(q.dmabuf_id, 0u);
}

TEST_F(VethTest, BindRxOnVethFailsWithTheKernelsReason) {
  UniqueFd memfd(memfd_create("not-a-dmabuf", MFD_CLOEXEC));
  ASSERT_TRUE(memfd.valid());
  ASSERT_EQ(ftruncate(memfd.get(), 1 << 20), 0);
  Result<RxQueueBinding> binding = RxQueueBinding::Bind(ifindex_, memfd.get(), {0});
  ASSERT_FALSE(binding.ok());
  const std::string& message = binding.status().message();
  EXPECT_NE(message.find("bind-rx"), std::string::npos) << message;
  EXPECT_NE(message.find("Operation not supported"), std::string::npos) << message;
  EXPECT_NE(message.find("errno 95"), std::string::npos) << message;
  // This kernel names the offending attribute (the ifindex) instead of a text message.
  EXPECT_TRUE(message.find("rejects attribute ifindex") != std::string::npos ||
              message.find("kernel says") != std::string::npos)
      << message;
  // netdev_nl_bind_rx_doit marks only the ifindex (no text) for a driver without the queue
  // API (!netdev_need_ops_lock, net/core/netdev-genl.c): the table says what that means.
  if (message.find("kernel says") == std::string::npos) {
    EXPECT_NE(message.find("what it means: the NIC's driver has no queue-management API"),
              std::string::npos)
        << message;
  }
}

// bind-tx (Linux 6.16+) on a veth: the driver has no netmem TX. The kernel's
// netdev_nl_bind_tx_doit (net/core/netdev-genl.c) refuses it with EOPNOTSUPP and the extack
// "Driver does not support netmem TX" before it looks at the fd, so a memfd will do.
TEST_F(VethTest, BindTxOnVethFailsWithTheKernelsReason) {
  UniqueFd memfd(memfd_create("not-a-dmabuf", MFD_CLOEXEC));
  ASSERT_TRUE(memfd.valid());
  ASSERT_EQ(ftruncate(memfd.get(), 1 << 20), 0);
  Result<TxBinding> binding = TxBinding::Bind(ifindex_, memfd.get());
  ASSERT_FALSE(binding.ok());
  const std::string& message = binding.status().message();
  EXPECT_NE(message.find("bind-tx"), std::string::npos) << message;
  EXPECT_NE(message.find("errno 95"), std::string::npos) << message;
  EXPECT_NE(message.find("netmem TX"), std::string::npos) << message;
  // The kernel's extack says it all: nothing from the table is added.
  EXPECT_EQ(message.find("what it means"), std::string::npos) << message;
}

TEST_F(VethTest, TxReadinessOfAVethSaysItsDriverHasNoNetmemTx) {
  NetDevice veth;
  veth.name = name_;
  veth.ifindex = ifindex_;
  ReadinessReport report = CheckNicTx(veth);
  ASSERT_EQ(report.checks().size(), 1u);
  const CheckOutcome& check = report.checks().front();
  EXPECT_EQ(check.check, "netmem tx");
  EXPECT_EQ(check.verdict, Verdict::kSkip);  // information only: never fails readiness
  EXPECT_NE(check.detail.find("driver without netmem TX"), std::string::npos) << check.detail;
  EXPECT_TRUE(report.ready());
}

TEST_F(VethTest, FlowSteeringRuleOnVethIsRefusedWithTheReason) {
  Result<SocketAddress> local = SocketAddress::FromString("198.18.0.1", 5000);
  Result<SocketAddress> remote = SocketAddress::FromString("198.18.0.2", 6000);
  ASSERT_TRUE(local.ok() && remote.ok());
  Result<std::shared_ptr<HostRegistry>> registry = HostRegistry::Open();
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  SteeringContext context{std::make_shared<EthtoolNtupleTable>(name_), registry.value(), {}};
  Result<FlowSteeringRule> rule =
      FlowSteeringRule::Install(context, local.value(), remote.value(), 0);
  ASSERT_FALSE(rule.ok());
  const std::string& message = rule.status().message();
  EXPECT_NE(message.find("steering 198.18.0.2:6000 -> 198.18.0.1:5000 to RX queue 0"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("not supported by driver"), std::string::npos) << message;
}

TEST(BindRxTest, EmptyQueueListIsRejectedBeforeTheKernel) {
  Result<RxQueueBinding> binding = RxQueueBinding::Bind(1, 0, {});
  ASSERT_FALSE(binding.ok());
  EXPECT_EQ(binding.status().kind(), ErrorKind::kInvalidArgument);
}

TEST(DevmemRxSetupTest, FailsWithTheFirstStepsReasonAndLeavesNothingBehind) {
  // The per-connection setup on this machine: no GPU driver, so the region cannot exist; the
  // error names that step, and the path stays untouched for the plain-TCP fallback.
  NetDevice lo;
  lo.name = "lo";
  lo.ifindex = static_cast<int>(if_nametoindex("lo"));
  auto [client, server] = testing::TcpPair();
  DevmemRxRequest request;
  request.nic = &lo;
  request.queues = {0};
  request.gpu = 0;
  request.region_bytes = 4 << 20;
  request.arena_bytes = 4 << 20;
  request.data_fds = {server.get()};
  RxPath path;
  Status status = PrepareDevmemRx(request, &path);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("RX arena on GPU 0"), std::string::npos) << status.message();
  EXPECT_EQ(path.mode, RxPath::Mode::kPlain);
  EXPECT_TRUE(path.receivers.empty());
  EXPECT_TRUE(path.keep_alive.empty());
  EXPECT_EQ(path.region, nullptr);

  DevmemRxRequest no_queues = request;
  no_queues.queues.clear();
  EXPECT_FALSE(PrepareDevmemRx(no_queues, &path).ok());
}

TEST(DevmemRecvTest, PlainLoopbackSocketYieldsOrdinaryDataWithoutCmsgs) {
  auto [client, server] = testing::TcpPair();
  const char payload[] = "plain bytes on an unbound queue";
  ASSERT_EQ(send(client.get(), payload, sizeof(payload), 0), static_cast<ssize_t>(sizeof(payload)));

  char bounce[256];
  alignas(cmsghdr) char control[4096];
  iovec iov{bounce, sizeof(bounce)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = recvmsg(server.get(), &msg, uapi::kMsgSockDevmem);
  ASSERT_EQ(n, static_cast<ssize_t>(sizeof(payload)));
  EXPECT_EQ(msg.msg_controllen, 0u);
  std::vector<StreamSegment> segments;
  Result<ParsedReceive> parsed =
      ParseDevmemReceive(msg, n, RegionBinding{1, 1 << 20}, sizeof(bounce), &segments);
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_TRUE(parsed->plain);
  EXPECT_EQ(memcmp(bounce, payload, sizeof(payload)), 0);
}

// The real kernel (CONFIG_NET_DEVMEM): unknown tokens free nothing, and the 128-entry cap
// that the batching above respects is enforced.
class KernelDontneedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(fd_.valid());
  }
  UniqueFd fd_;
};

TEST_F(KernelDontneedTest, UnknownTokensFreeNothingAndAreCounted) {
  TokenBatch batch;
  for (uint32_t t = 0; t < 300; ++t) batch.Add(5 * t + 1);
  TokenReleaseStats stats;
  Status status = batch.Release(fd_.get(), &stats);
  if (!status.ok() && status.message().find("Protocol not available") != std::string::npos) {
    GTEST_SKIP() << "kernel without SO_DEVMEM_DONTNEED: " << status.message();
  }
  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(stats.calls, 3u);
  EXPECT_EQ(stats.tokens_returned, 300u);
  EXPECT_EQ(stats.tokens_not_freed, 300u);
}

TEST_F(KernelDontneedTest, KernelRejectsMoreThan128Entries) {
  std::vector<uapi::DmabufToken> entries(200, {1, 1});
  errno = 0;
  int rc = TokenBatch::KernelRelease(fd_.get(), entries.data(), entries.size());
  if (rc < 0 && errno == ENOPROTOOPT) GTEST_SKIP() << "kernel without SO_DEVMEM_DONTNEED";
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(TokenBatch::KernelRelease(fd_.get(), entries.data(), 128), 0);
}

}  // namespace
}  // namespace devmem
