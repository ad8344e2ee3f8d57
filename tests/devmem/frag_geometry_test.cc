// Frag sizes from the NIC's real numbers (N11-N13 of the 2026-12 audit) and
// NCCL_DEVMEM_RX_PAGE_SIZE: the frag count bounds, the recvmsg control buffer, the RX budget and
// its refusal, NCCL unpack's refusal at init, the scatter consumer's op limit and the variable
// itself.
#include "plugin/devmem/frag_geometry.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <map>
#include <string>
#include <vector>

#include "plugin/consumers/kernel_scatter_consumer.h"
#include "plugin/consumers/unpack_queue.h"
#include "plugin/core/config.h"
#include "plugin/core/net_device.h"
#include "plugin/devmem/uapi.h"
#include "plugin/setup/rx_budget.h"
#include "plugin/setup/rx_plan.h"

namespace devmem {
namespace {

Config ConfigOf(const std::map<std::string, std::string>& env) {
  Result<Config> config = Config::FromEnvironment(
      [&](const char* name) -> const char* {
        auto it = env.find(name);
        return it == env.end() ? nullptr : it->second.c_str();
      },
      2);
  EXPECT_TRUE(config.ok()) << config.status().message();
  return config.ok() ? config.value() : Config();
}

// gve at MTU 1500: 1428-byte payloads (IPv6 + TCP timestamps) in 2 KiB buffers
// (GVE_DEFAULT_RX_BUFFER_SIZE), 4 KiB niovs: a payload is one frag, two where it straddles.
TEST(FragGeometryTest, Mtu1500PayloadsInGve2KiBBuffers) {
  const FragGeometry g = FragGeometry::ForNic(1500, 2048, 4096);
  EXPECT_EQ(g.unit_bytes(), 1428u);
  EXPECT_EQ(g.frags_per_unit(), 2u);
  EXPECT_EQ(g.niov_bytes(), 4096u);
  // 1 MiB of one run: 735 payloads, plus a partial one at each end.
  EXPECT_EQ(g.MaxFrags(1 << 20), (735u + 2) * 2);
  EXPECT_EQ(g.MaxFrags(0), 0u);
}

// MTU 9000 with 4 KiB buffers: an 8928-byte payload fills three buffers and may straddle a
// fourth; with rx-page-size 16 KiB buffers it is one frag, two across a niov boundary.
TEST(FragGeometryTest, JumboPayloadsAcrossBuffersAndLargeNiovs) {
  EXPECT_EQ(FragGeometry::ForNic(9000, 4096, 4096).frags_per_unit(), 4u);
  EXPECT_EQ(FragGeometry::ForNic(9000, 16384, 16384).frags_per_unit(), 2u);
  // Unreported rx-buf-len counts as gve's 2 KiB (more frags) but holds whole niovs.
  const FragGeometry unreported = FragGeometry::ForNic(9000, 0, 4096);
  EXPECT_EQ(unreported.frags_per_unit(), 6u);
  EXPECT_NE(unreported.Describe().find("not reported"), std::string::npos);
  EXPECT_DOUBLE_EQ(unreported.RegionBytesPerStreamByte(), 3.0 * 4096 / 8928);
}

TEST(FragGeometryTest, EmulatedPagesAreWholeOrHalfPages) {
  for (uint32_t page : {4096u, 16384u, 65536u, 2u << 20}) {
    const FragGeometry g = FragGeometry::ForEmulation(page);
    EXPECT_EQ(g.unit_bytes(), page / 2);
    EXPECT_EQ(g.frags_per_unit(), 1u);
    EXPECT_DOUBLE_EQ(g.RegionBytesPerStreamByte(), 2.0);
    EXPECT_EQ(g.MaxNiovBytesPinned(page), uint64_t{2} * page);
  }
  // The default is what emulation always was: 4 KiB pages.
  EXPECT_EQ(FragGeometry().niov_bytes(), 4096u);
}

// N11: tcp_recvmsg_dmabuf (net/ipv4/tcp.c) stops at the first cmsg that does not fit; the buffer
// must hold every frag 256 KiB can be and stay a multiple of CMSG_SPACE(24) (audit Q3: on
// 6.12/6.13 put_cmsg could otherwise write a truncated one).
TEST(FragGeometryTest, ControlBufferHoldsEveryFragOf256KiB) {
  const size_t cmsg = CMSG_SPACE(sizeof(uapi::DmabufCmsg));
  for (const FragGeometry& g :
       {FragGeometry::ForNic(1500, 2048, 4096), FragGeometry::ForNic(1500, 0, 4096),
        FragGeometry::ForNic(9000, 0, 16384), FragGeometry::ForEmulation(4096)}) {
    const size_t bytes = DevmemControlBytes(256 << 10, g);
    EXPECT_EQ(bytes % cmsg, 0u) << g.Describe();
    EXPECT_GE(bytes / cmsg, g.MaxFrags(256 << 10)) << g.Describe();
  }
  // 181 frags of 1448 bytes are 256 KiB at MTU 1500; the old buffer held 72.
  EXPECT_GE(DevmemControlBytes(256 << 10, FragGeometry::ForNic(1500, 2048, 4096)) / cmsg, 181u);
}

TEST(FragGeometryTest, RxPageSizeBelowTheKernelsPageIsRefused) {
  EXPECT_EQ(RxPageSizeRefusal(16384, 4096), "");
  EXPECT_EQ(RxPageSizeRefusal(4096, 4096), "");
  const std::string refusal = RxPageSizeRefusal(16384, 65536);
  EXPECT_NE(refusal.find("below this kernel's 65536-byte page"), std::string::npos) << refusal;
  EXPECT_NE(RxPageSizeRefusal(24576, 4096).find("power of two"), std::string::npos);
}

TEST(RxPageSizeConfigTest, AcceptsPowersOfTwoFrom4KiBTo2MiB) {
  EXPECT_EQ(ConfigOf({}).rx_page_bytes, 0u);
  EXPECT_EQ(ConfigOf({{"NCCL_DEVMEM_RX_PAGE_SIZE", "16K"}}).rx_page_bytes, 16384u);
  EXPECT_EQ(ConfigOf({{"NCCL_DEVMEM_RX_PAGE_SIZE", "2M"}}).rx_page_bytes, 2u << 20);
  for (const char* bad : {"12K", "4M", "2048", "0", "16KB"}) {
    Result<Config> config = Config::FromEnvironment(
        [&](const char* name) -> const char* {
          return std::string(name) == "NCCL_DEVMEM_RX_PAGE_SIZE" ? bad : nullptr;
        },
        2);
    ASSERT_FALSE(config.ok()) << bad;
    EXPECT_NE(config.status().message().find("NCCL_DEVMEM_RX_PAGE_SIZE"), std::string::npos)
        << config.status().message();
  }
}

// N13: MTU 8244 on gve (2 KiB buffers) with NCCL_BUFFSIZE=16M: a 4 MiB step takes far more than
// the 2048 entries of one unpack step (NCCL src/device/network/unpack/unpack_defs.h
// NET_UNPACK_MAX_SLICE_PAGES), so NCCL's unpack is refused at init, not at the first step.
// The old estimate (one frag per MTU - 72 bytes) accepted it.
TEST(UnpackRefusalTest, LargeBuffsizeOnGveIsRefusedAtInit) {
  const FragGeometry gve = FragGeometry::ForNic(8244, 2048, 4096);
  const std::string refusal = UnpackRefusal(ConfigOf({{"NCCL_BUFFSIZE", "16777216"}}), gve);
  EXPECT_NE(refusal.find("frags"), std::string::npos) << refusal;
  EXPECT_NE(refusal.find("rx-buf-len 2048"), std::string::npos) << refusal;
  EXPECT_EQ(UnpackRefusal(ConfigOf({}), gve), "");  // the default 4 MiB NCCL_BUFFSIZE fits
  // Large RX pages: a 4 MiB step of 16 KiB-buffer jumbo payloads fits one unpack step.
  EXPECT_EQ(UnpackRefusal(ConfigOf({{"NCCL_BUFFSIZE", "16777216"}}),
                          FragGeometry::ForNic(9000, 16384, 16384)),
            "");
}

// N13: the scatter consumer sizes its ops from the same geometry; MTU 1500 frags of 1448 bytes
// are below the 2 KiB the old limit assumed.
TEST(ScatterOpsTest, LimitCoversSmallAndLargeFrags) {
  const uint64_t message = 128ull << 20;
  EXPECT_GE(MaxScatterOps(message, FragGeometry::ForNic(1500, 2048, 4096)), message / 1448);
  EXPECT_GE(MaxScatterOps(message, FragGeometry::ForEmulation(4096)), message / 2048);
  // Large frags need fewer ops, but at least one per 64 KiB piece of the plan.
  EXPECT_GE(MaxScatterOps(message, FragGeometry::ForEmulation(2u << 20)), message / (64 << 10));
  EXPECT_LT(MaxScatterOps(message, FragGeometry::ForEmulation(65536)),
            MaxScatterOps(message, FragGeometry::ForEmulation(4096)));
}

// N12: the rings' pre-fill comes from the ring size and the niov size (PAGE_SIZE or
// rx-page-size), gve's devmem page pool is 16384 niovs a queue, and a user region below the
// rings plus one NCCL step is refused.
TEST(RxBudgetTest, RingsAndPoolsFromTheDriversNumbers) {
  const Config config = ConfigOf({});
  RxQueueFacts gve{2, 1024, "gve"};
  const RxBudget budget = PlanRxBudget(config, gve, FragGeometry::ForNic(1500, 2048, 4096));
  EXPECT_EQ(budget.ring_prefill, 2ull * 1024 * 4096);
  EXPECT_EQ(budget.page_pool, 2ull * kGvePagePoolNiovs * 4096);
  EXPECT_GE(budget.region_bytes, budget.ring_prefill + budget.page_pool + budget.in_flight);
  EXPECT_TRUE(budget.refusal.empty());

  RxQueueFacts mlx5{1, 0, "mlx5_core"};  // ring not reported: 4096 assumed, pool like the ring
  const RxBudget large = PlanRxBudget(config, mlx5, FragGeometry::ForNic(9000, 0, 16384));
  EXPECT_EQ(large.ring_prefill, kAssumedRingEntries * 16384);
  EXPECT_EQ(large.page_pool, kAssumedRingEntries * 16384);
  EXPECT_NE(large.text.find("16384-byte niovs"), std::string::npos) << large.text;
}

TEST(RxBudgetTest, UserRegionBelowRingsPlusOneStepIsRefused) {
  const FragGeometry g = FragGeometry::ForNic(1500, 2048, 4096);
  const RxBudget small =
      PlanRxBudget(ConfigOf({{"NCCL_DEVMEM_RX_REGION_BYTES", "8M"}}), {1, 2048, "gve"}, g);
  EXPECT_NE(small.refusal.find("NCCL_DEVMEM_RX_REGION_BYTES=8388608 is below"), std::string::npos)
      << small.refusal;
  const RxBudget enough =
      PlanRxBudget(ConfigOf({{"NCCL_DEVMEM_RX_REGION_BYTES", "64M"}}), {1, 2048, "gve"}, g);
  EXPECT_TRUE(enough.refusal.empty()) << enough.refusal;
  EXPECT_NE(enough.text.find("under load the NIC may drop packets"), std::string::npos);
}

// The conformance suites with large frags (tests/CMakeLists.txt *_16k_pages, *_64k_pages) run
// the emulated path with those pages, and NCCL's unpack stays on: the plan neither falls back
// to plain TCP nor refuses the unpack for them.
TEST(EmulatedPlanTest, LargePagesKeepTheEmulatedPathAndNcclUnpack) {
  for (const char* page : {"16K", "64K"}) {
    Config config = ConfigOf({{"NCCL_DEVMEM_EMULATE", "1"},
                              {"NCCL_DEVMEM_UNPACK", "nccl"},
                              {"NCCL_DEVMEM_RX_REGION_BYTES", "4M"},
                              {"NCCL_DEVMEM_RX_PAGE_SIZE", page}});
    NetDevice lo;
    lo.name = "lo";
    lo.ifindex = 1;
    lo.loopback = true;
    const std::vector<RxPlan> plans = PlanReceivePaths(&config, {lo}, false);
    ASSERT_EQ(plans.size(), 1u);
    EXPECT_EQ(plans[0].plain_reason, "") << page;
    EXPECT_EQ(plans[0].geometry.niov_bytes(), config.rx_page_bytes);
    EXPECT_EQ(config.unpack, UnpackMode::kNccl) << page;
  }
  // A region the oldest step cannot fit half of in the worst case is plain, as before.
  Config tiny = ConfigOf({{"NCCL_DEVMEM_EMULATE", "1"}, {"NCCL_DEVMEM_RX_REGION_BYTES", "1M"}});
  NetDevice lo;
  lo.name = "lo";
  const std::vector<RxPlan> plans = PlanReceivePaths(&tiny, {lo}, false);
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_NE(plans[0].plain_reason.find("more than half the 1048576-byte RX region"),
            std::string::npos)
      << plans[0].plain_reason;
}

}  // namespace
}  // namespace devmem
