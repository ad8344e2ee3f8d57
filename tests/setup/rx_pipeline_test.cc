// The consumer seam (plugin/consumers/frag_consumer.h) and the one place that turns a receive
// mode into parts (plugin/setup/rx_pipeline.h): what each consumer plans for a posted buffer,
// what the pipeline of each mode holds, and the refusals of a path set up without its parts.
// The transport executes these plans without asking which consumer it has
// (plugin/transport/recv_comm.cc PostRecv, recv_control.cc Dispatch).
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "gpu/scatter_plan.h"
#include "plugin/setup/rx_pipeline.h"
#include "tests/common/comm_pair.h"

namespace devmem {
namespace {

// Runs every submission at once on the CPU (a GPU whose kernel finishes immediately).
class ImmediateHostEngine final : public gpu::ScatterEngine {
 public:
  Result<std::optional<gpu::ScatterTicket>> Submit(const gpu::ScatterOp* ops, size_t count,
                                                   const void* region_dptr,
                                                   void* dst_dptr) override {
    gpu::ExecuteScatterPlanOnHost(ops, count, static_cast<const char*>(region_dptr),
                                  static_cast<char*>(dst_dptr));
    return std::optional<gpu::ScatterTicket>(gpu::ScatterTicket{0, 1});
  }
  Result<bool> Done(const gpu::ScatterTicket&) override { return true; }
  Status Synchronize() override { return Status::Ok(); }
  Result<bool> Idle() override { return true; }
};

constexpr uint64_t kRegionBytes = 1 << 20;

RxPath HostRegionPath() {
  RxPath path = testing::EmulatedPath(kRegionBytes, /*gpu=*/-1);
  EXPECT_NE(path.region, nullptr) << "a host arena needs no GPU";
  return path;
}

TEST(RxPipelineTest, PlainPathCarriesNoFragsAndHasNoConsumer) {
  RxPath path;
  path.plain_reason = "test";
  Result<RxPipeline> rx = BuildRxPipeline(std::move(path), 2, "plain");
  ASSERT_TRUE(rx.ok()) << rx.status().message();
  EXPECT_FALSE(rx->carries_frags());
  EXPECT_EQ(rx->consumer, nullptr);
  EXPECT_EQ(rx->unpack, nullptr);
  EXPECT_TRUE(rx->receivers.empty());
  // What the transport plans without a consumer: a CUDA buffer through staging, whole.
  const LandingPlan cuda = HostDataLanding(true);
  EXPECT_TRUE(cuda.staged);
  EXPECT_EQ(cuda.delivery, HostDelivery::kWholeToDevice);
  EXPECT_FALSE(cuda.scatter_on_arrival);
  const LandingPlan host = HostDataLanding(false);
  EXPECT_FALSE(host.staged);
  EXPECT_EQ(host.delivery, HostDelivery::kNone);
}

TEST(RxPipelineTest, HostRegionGetsTheCpuConsumerThatScattersOnArrival) {
  Result<RxPipeline> rx = BuildRxPipeline(HostRegionPath(), 3, "host");
  ASSERT_TRUE(rx.ok()) << rx.status().message();
  ASSERT_TRUE(rx->carries_frags());
  EXPECT_EQ(rx->receivers.size(), 3u);  // one emulated receiver per data socket
  ASSERT_NE(rx->consumer, nullptr);
  EXPECT_STREQ(rx->consumer_name, "host scatter");
  EXPECT_EQ(rx->unpack, nullptr);

  const LandingPlan host = rx->consumer->PlanLanding(false);
  EXPECT_TRUE(host.scatter_on_arrival);
  EXPECT_FALSE(host.staged);
  const LandingPlan cuda = rx->consumer->PlanLanding(true);
  EXPECT_FALSE(cuda.scatter_on_arrival);  // held, scattered into staging, then copied whole
  EXPECT_TRUE(cuda.staged);
  EXPECT_EQ(cuda.delivery, HostDelivery::kWholeToDevice);

  // ScatterOnArrival copies region bytes to the message offsets the table names.
  char* region = const_cast<char*>(rx->region->host_base());
  ASSERT_NE(region, nullptr);
  memcpy(region + 8192, "frag-one", 8);
  memcpy(region + 4096, "frag-two", 8);
  StreamSegment segments[2];
  segments[0] = StreamSegment{StreamSegment::Kind::kRegion, 8192, 8, 1};
  segments[1] = StreamSegment{StreamSegment::Kind::kRegion, 4096, 8, 2};
  OffsetTable table;
  table.Append(segments, 2, /*dst_offset=*/4);
  std::vector<char> dst(20, '.');
  ASSERT_TRUE(rx->consumer->ScatterOnArrival(table, dst.data(), dst.size()).ok());
  EXPECT_EQ(std::string(dst.data(), dst.size()), "....frag-onefrag-two");
  // A table reaching past the destination is refused, not copied.
  std::vector<char> small(10, '.');
  EXPECT_FALSE(rx->consumer->ScatterOnArrival(table, small.data(), small.size()).ok());
}

TEST(RxPipelineTest, ScatterEngineGetsTheKernelConsumerThatHoldsFrags) {
  RxPath path = HostRegionPath();
  path.engine_factory = [](int, size_t, size_t) -> Result<std::unique_ptr<gpu::ScatterEngine>> {
    return std::unique_ptr<gpu::ScatterEngine>(new ImmediateHostEngine());
  };
  Result<RxPipeline> rx = BuildRxPipeline(std::move(path), 2, "kernel");
  ASSERT_TRUE(rx.ok()) << rx.status().message();
  ASSERT_NE(rx->consumer, nullptr);
  EXPECT_STREQ(rx->consumer_name, "plugin scatter kernel");
  // Frags go straight to a CUDA buffer; only its host bytes are staged.
  const LandingPlan cuda = rx->consumer->PlanLanding(true);
  EXPECT_TRUE(cuda.staged);
  EXPECT_FALSE(cuda.consumer_writes_staging);
  EXPECT_EQ(cuda.delivery, HostDelivery::kRangesToDevice);
  EXPECT_FALSE(cuda.scatter_on_arrival);
  // Over a host region the engine writes a host buffer where it is.
  const LandingPlan host = rx->consumer->PlanLanding(false);
  EXPECT_FALSE(host.staged);
  EXPECT_FALSE(host.scatter_on_arrival);
  // It never copies on the workers: the transport must not ask it to.
  OffsetTable empty;
  char byte = 0;
  Status refused = rx->consumer->ScatterOnArrival(empty, &byte, 1);
  EXPECT_EQ(refused.kind(), ErrorKind::kInternal);
}

TEST(RxPipelineTest, NcclUnpackTakesEveryStepBesideThePluginConsumer) {
  RxPath path = HostRegionPath();
  path.unpack = UnpackMode::kNccl;
  Result<RxPipeline> rx = BuildRxPipeline(std::move(path), 1, "unpack");
  ASSERT_TRUE(rx.ok()) << rx.status().message();
  ASSERT_NE(rx->unpack, nullptr);
  ASSERT_NE(rx->consumer, nullptr);  // LL/LL128 receives, which NCCL's unpack never reads
  EXPECT_TRUE(rx->unpack->ConsumesEveryStep());
  EXPECT_FALSE(rx->consumer->ConsumesEveryStep());
  EXPECT_STREQ(rx->consumer_name, "NCCL device unpack (SIMPLE) + plugin consumer (LL)");
  const LandingPlan cuda = rx->unpack->PlanLanding(true);
  EXPECT_TRUE(cuda.staged);
  EXPECT_EQ(cuda.delivery, HostDelivery::kRangesToDevice);
  EXPECT_FALSE(cuda.scatter_on_arrival);
}

TEST(RxPipelineTest, DevmemPathsWithoutTheirPartsAreRefused) {
  RxPath no_region = HostRegionPath();
  no_region.region.reset();
  Result<RxPipeline> a = BuildRxPipeline(std::move(no_region), 2, "no region");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().kind(), ErrorKind::kInternal);
  EXPECT_NE(a.status().message().find("without a region"), std::string::npos);

  RxPath devmem = HostRegionPath();
  devmem.mode = RxPath::Mode::kDevmem;  // bound by setup: one receiver per socket expected
  Result<RxPipeline> b = BuildRxPipeline(std::move(devmem), 2, "no receivers");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("without receivers"), std::string::npos);
}

}  // namespace
}  // namespace devmem
