// The meaning of bind refusals the kernel does not explain, written from the upstream code
// paths that return each errno (torvalds/linux @001b5d34 net/core/netdev-genl.c, @03e96b8c
// net/core/devmem.c, @0caa9a8d net/core/netdev_rx_queue.c; NVIDIA open-gpu-kernel-modules
// kernel-open/nvidia/nv-dmabuf.c), and the user page that restates the table.
#include "plugin/devmem/bind_errors.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <utility>

namespace devmem {
namespace {

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// net/core/devmem.c mp_dmabuf_devmem_init: `if (pool->p.order != 0) return -E2BIG;` (no
// extack: the page pool is created deep inside the driver's queue restart).
TEST(BindErrorsTest, E2bigIsAnRxBufLenAboveThePageSize) {
  const std::string why = ExplainBindRefusal(BindCommand::kRx, E2BIG, "");
  EXPECT_TRUE(Contains(why, "rx-buf-len")) << why;
  EXPECT_TRUE(Contains(why, "ethtool -G <if> rx-buf-len 4096")) << why;
}

// net/core/netdev_rx_queue.c netdev_rx_queue_restart: `err =
// page_pool_check_memory_provider(dev, rxq); if (err) goto err_free_new_queue_mem;`, which is
// -ENODATA when no page pool of the queue took the memory provider.
TEST(BindErrorsTest, EnodataIsADriverThatMadeNoPagePoolFromTheGpuMemory) {
  const std::string why = ExplainBindRefusal(BindCommand::kRx, ENODATA, "");
  EXPECT_TRUE(Contains(why, "page pool")) << why;
  EXPECT_TRUE(Contains(why, "unreadable")) << why;
}

// net/core/netdev-genl.c netdev_nl_bind_rx_doit: `else if (!netdev_need_ops_lock(netdev)) err
// = -EOPNOTSUPP;` with only NL_SET_BAD_ATTR(ifindex); netdev_rx_queue.c __net_mp_open_rxq and
// netdev_rx_queue_restart (`if (!qops || ...) return -EOPNOTSUPP;`) without extack at all.
TEST(BindErrorsTest, EopnotsuppOnBindRxIsADriverWithoutTheQueueApi) {
  const std::string why = ExplainBindRefusal(BindCommand::kRx, EOPNOTSUPP, "");
  EXPECT_TRUE(Contains(why, "queue-management API")) << why;
  EXPECT_TRUE(Contains(why, "ethtool -i")) << why;
}

// net/netlink/genetlink.c genl_family_rcv_msg: an op the family lacks is -EOPNOTSUPP, which is
// what bind-tx (op 15) meets on kernels before 6.16; netdev_nl_bind_tx_doit's own EOPNOTSUPP
// carries "Driver does not support netmem TX", which already says it.
TEST(BindErrorsTest, EopnotsuppOnBindTxWithoutExtackIsAKernelWithoutBindTx) {
  EXPECT_TRUE(Contains(ExplainBindRefusal(BindCommand::kTx, EOPNOTSUPP, ""), "6.16"));
  EXPECT_EQ(ExplainBindRefusal(BindCommand::kTx, EOPNOTSUPP, "Driver does not support netmem TX"),
            "");
}

// nv-dmabuf.c nv_dma_buf_attach: three `rc = -ENOTSUPP;` paths, each after an "NVRM: dma-buf
// attach failed: ..." line in the kernel log; net/core/devmem.c net_devmem_bind_dmabuf then sets
// the extack "Failed to bind dmabuf to device", which names the step but not the cause.
TEST(BindErrorsTest, Enotsupp524IsTheGpuDriverRefusingTheAttachWithItsReasonInDmesg) {
  for (BindCommand command : {BindCommand::kRx, BindCommand::kTx}) {
    for (const char* extack : {"", "Failed to bind dmabuf to device"}) {
      const std::string why = ExplainBindRefusal(command, kKernelEnotsupp, extack);
      EXPECT_TRUE(Contains(why, "dmesg | grep NVRM")) << why;
      EXPECT_TRUE(Contains(why, "PCI topology not supported for dma-buf")) << why;
      EXPECT_TRUE(Contains(why, "topology not supported for mapping type FORCE_PCIE")) << why;
      EXPECT_TRUE(Contains(why, "importer unable to handle MMIO without struct page")) << why;
      EXPECT_TRUE(Contains(why, "nvidia-smi topo -m")) << why;
    }
  }
}

// drivers/dma-buf/dma-buf.c dma_buf_get: -EBADF when fget fails, -EINVAL when the file is no
// dmabuf; both before any extack is set in net_devmem_bind_dmabuf.
TEST(BindErrorsTest, EbadfAndEinvalWithoutExtackAreAFdThatIsNoDmabuf) {
  for (BindCommand command : {BindCommand::kRx, BindCommand::kTx}) {
    EXPECT_TRUE(Contains(ExplainBindRefusal(command, EBADF, ""), "not an open file descriptor"));
    EXPECT_TRUE(Contains(ExplainBindRefusal(command, EINVAL, ""), "not a dmabuf"));
  }
}

// netdev_nl_bind_{rx,tx}_doit: ENODEV from netdev_get_by_index_lock (no such ifindex in
// genl_info_net) or !netif_device_present, with only a bad-attribute mark.
TEST(BindErrorsTest, EnodevIsANicMissingFromTheNamespaceOrDetached) {
  for (BindCommand command : {BindCommand::kRx, BindCommand::kTx}) {
    const std::string why = ExplainBindRefusal(command, ENODEV, "");
    EXPECT_TRUE(Contains(why, "network namespace")) << why;
    EXPECT_TRUE(Contains(why, "netif_device_present")) << why;
  }
}

// An extack the table does not list explains itself (e.g. __net_mp_open_rxq's "tcp-data-split
// is disabled", EINVAL): nothing is added.
TEST(BindErrorsTest, TheKernelsOwnExplanationIsNotOverwritten) {
  EXPECT_EQ(ExplainBindRefusal(BindCommand::kRx, EINVAL, "tcp-data-split is disabled"), "");
  EXPECT_EQ(ExplainBindRefusal(BindCommand::kRx, EEXIST,
                               "designated queue already memory provider bound"),
            "");
}

TEST(BindErrorsTest, AnErrnoTheTableLacksStillSaysWhereToLook) {
  const std::string why = ExplainBindRefusal(BindCommand::kRx, EXDEV, "");
  EXPECT_TRUE(Contains(why, "errno 18")) << why;
  EXPECT_TRUE(Contains(why, "dmesg")) << why;
}

TEST(BindErrorsTest, OneCausePerCommandAndErrnoEachWithItsSource) {
  std::set<std::pair<BindCommand, int>> seen;
  for (const BindErrorCause& cause : BindErrorCauses()) {
    EXPECT_TRUE(seen.insert({cause.command, cause.error}).second) << cause.error_name;
    EXPECT_GT(std::string(cause.meaning).size(), 20u) << cause.error_name;
    EXPECT_GT(std::string(cause.where_to_look).size(), 5u) << cause.error_name;
    EXPECT_GT(std::string(cause.upstream).size(), 10u) << cause.error_name;
  }
}

// docs/bind-errors.md restates the table: one row per cause, as the code says it ('|' inside
// a cell is escaped as "\|" in Markdown).
TEST(BindErrorsTest, TheUserPageListsEveryCauseAsTheCodeSaysIt) {
  std::ifstream page(DEVMEM_SOURCE_DIR "/docs/bind-errors.md");
  ASSERT_TRUE(page.good());
  std::stringstream text;
  text << page.rdbuf();
  std::string unescaped;
  const std::string raw = text.str();
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\\' && i + 1 < raw.size() && raw[i + 1] == '|') continue;
    unescaped += raw[i];
  }
  std::istringstream lines(unescaped);
  std::set<std::string> rows;
  for (std::string line; std::getline(lines, line);) rows.insert(line);
  for (const BindErrorCause& cause : BindErrorCauses()) {
    const std::string prefix =
        std::string("| ") + (cause.command == BindCommand::kRx ? "bind-rx" : "bind-tx") + " | " +
        cause.error_name + " (" + std::to_string(cause.error) + ") | ";
    bool found = false;
    for (const std::string& row : rows) {
      if (row.rfind(prefix, 0) != 0) continue;
      found = true;
      EXPECT_TRUE(Contains(row, cause.meaning)) << row;
      EXPECT_TRUE(Contains(row, cause.where_to_look)) << row;
    }
    EXPECT_TRUE(found) << "docs/bind-errors.md has no row " << prefix;
  }
}

}  // namespace
}  // namespace devmem
