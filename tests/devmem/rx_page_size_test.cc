// bind-rx with NETDEV_A_DMABUF_RX_PAGE_SIZE against the running kernel. Kernels before the
// attribute (this machine's 6.18: net/core/netdev-genl-gen.c netdev_bind_rx_nl_policy ends at
// NETDEV_A_DMABUF_FD) refuse it by strict policy validation before bind-rx runs: EINVAL, the
// extack pointing at the attribute. Kernels with it (torvalds/linux @001b5d34) check it, then
// refuse loopback for what it is (no queue API: EOPNOTSUPP on ifindex). Either way the error
// must say which, so that NCCL_DEVMEM_RX_PAGE_SIZE is "refused clearly where not taken".
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "plugin/core/unique_fd.h"
#include "plugin/devmem/netdev_netlink.h"

namespace devmem {
namespace {

constexpr int kLoopbackIfindex = 1;

Result<RxQueueBinding> BindLoopback(uint32_t rx_page_bytes) {
  UniqueFd memfd(memfd_create("not-a-dmabuf", MFD_CLOEXEC));
  EXPECT_TRUE(memfd.valid());
  EXPECT_EQ(ftruncate(memfd.get(), 1 << 20), 0);
  return RxQueueBinding::Bind(kLoopbackIfindex, memfd.get(), {0}, rx_page_bytes);
}

TEST(RxPageSizeKernelTest, RefusalNamesTheAttributeOrTheDevice) {
  // bind-rx is GENL_ADMIN_PERM (6.18) / GENL_UNS_ADMIN_PERM: checked before the policy.
  if (geteuid() != 0) GTEST_SKIP() << "needs root (CAP_NET_ADMIN) for bind-rx";
  Result<RxQueueBinding> with_page = BindLoopback(16384);
  ASSERT_FALSE(with_page.ok());
  const std::string& message = with_page.status().message();
  if (message.find("rx-page-size") != std::string::npos) {
    // No attribute 5 in this kernel's policy.
    EXPECT_NE(message.find("errno 22"), std::string::npos) << message;
    RecordProperty("kernel", "bind-rx without rx-page-size");
  } else {
    EXPECT_NE(message.find("ifindex"), std::string::npos) << message;
    RecordProperty("kernel", "bind-rx with rx-page-size");
  }
  // Without the attribute the same request is refused for the device, never for a page size.
  Result<RxQueueBinding> without = BindLoopback(0);
  ASSERT_FALSE(without.ok());
  EXPECT_EQ(without.status().message().find("rx-page-size"), std::string::npos)
      << without.status().message();
}

// The policy's floor is PAGE_SIZE (netdev_a_dmabuf_rx_page_size_range .min = PAGE_SIZE) and
// bind-rx wants a power of two ("rx-page-size must be a power of 2"): a kernel that knows the
// attribute refuses 1000 for the attribute; one that does not, for being unknown. Both name it.
TEST(RxPageSizeKernelTest, SizeTheKernelCannotTakeIsRefusedForTheAttribute) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (CAP_NET_ADMIN) for bind-rx";
  Result<RxQueueBinding> odd = BindLoopback(1000);
  ASSERT_FALSE(odd.ok());
  EXPECT_NE(odd.status().message().find("rx-page-size"), std::string::npos)
      << odd.status().message();
}

}  // namespace
}  // namespace devmem
