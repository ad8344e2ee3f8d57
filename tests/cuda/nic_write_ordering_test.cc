// N1: when the NIC's writes into GPU memory are flushed before a GPU engine reads them, and that
// the plugin's GPU consumers run the flush first. The rule is NCCL's ncclTopoNeedFlush (NVIDIA/nccl
// v2.28.9 src/graph/paths.cc:511-530) said through the CUDA driver's attributes (cuda.h, CUDA
// 13.0: CUGPUDirectRDMAWritesOrdering l.4974-4976, cuFlushGPUDirectRDMAWrites l.5679-5717). What
// only a GPU answers comes from a fake GpuWriteOrderingSource; the consumers are the product's.
#include "plugin/cuda/nic_write_ordering.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gpu/scatter_plan.h"
#include "plugin/consumers/kernel_scatter_consumer.h"
#include "plugin/consumers/unpack_queue.h"

namespace devmem {
namespace {

GpuWriteOrderingFacts Gpu(int major, int minor, int ordering, int flush_options,
                          bool coherent = false) {
  GpuWriteOrderingFacts facts;
  facts.compute_major = major;
  facts.compute_minor = minor;
  facts.rdma_writes_ordering = ordering;
  facts.flush_options = flush_options;
  facts.coherent_host = coherent;
  return facts;
}

// --- The decision table -----------------------------------------------------------------------

TEST(NicWriteFlushDecisionTest, AmpereWithoutWritesOrderingFlushesToTheOwner) {
  // paths.cc:520-521 "Flush is required on Ampere and earlier"; the driver agrees when it reports
  // GPU_DIRECT_RDMA_WRITES_ORDERING_NONE (cuda.h:4974) and offers the host flush (cuda.h:4966).
  NicWriteFlushDecision d =
      DecideNicWriteFlush(Gpu(8, 0, kRdmaWritesOrderingNone, kFlushWritesOptionHost));
  EXPECT_EQ(d.action, NicWriteFlush::kFlushToOwner);
  EXPECT_EQ(d.reason.rfind("flush needed: GPU sm_80 without GPU_DIRECT_RDMA_WRITES_ORDERING", 0),
            0u)
      << d.reason;
}

TEST(NicWriteFlushDecisionTest, AGpuThatOrdersForItsOwnerNeedsNoFlush) {
  // cuda.h:5687-5691: a flush whose scope lies within GPU_DIRECT_RDMA_WRITES_ORDERING is a no-op.
  NicWriteFlushDecision owner =
      DecideNicWriteFlush(Gpu(9, 0, kRdmaWritesOrderingOwner, kFlushWritesOptionHost));
  EXPECT_EQ(owner.action, NicWriteFlush::kNotNeeded);
  EXPECT_EQ(owner.reason, "not needed: GPU sm_90 reports GPU_DIRECT_RDMA_WRITES_ORDERING=OWNER");
  NicWriteFlushDecision all = DecideNicWriteFlush(Gpu(10, 0, kRdmaWritesOrderingAllDevices, 0));
  EXPECT_EQ(all.action, NicWriteFlush::kNotNeeded);
  EXPECT_EQ(all.reason,
            "not needed: GPU sm_100 reports GPU_DIRECT_RDMA_WRITES_ORDERING=ALL_DEVICES");
  // Even pre-Hopper: NCCL's RDMA-read flush would be CUDA's no-op there.
  EXPECT_EQ(DecideNicWriteFlush(Gpu(8, 6, kRdmaWritesOrderingOwner, 0)).action,
            NicWriteFlush::kNotNeeded);
}

TEST(NicWriteFlushDecisionTest, TheDriversWordBeatsTheGenerationForAHopperReportingNone) {
  // NCCL skips the flush from sm_90 on (paths.cc:521) because those GPUs order writes; one whose
  // driver says NONE is flushed, as CUDA's contract for the attribute asks.
  EXPECT_EQ(DecideNicWriteFlush(Gpu(9, 0, kRdmaWritesOrderingNone, kFlushWritesOptionHost)).action,
            NicWriteFlush::kFlushToOwner);
}

TEST(NicWriteFlushDecisionTest, ANeededFlushTheDriverCannotDoRefusesTheGpu) {
  NicWriteFlushDecision d = DecideNicWriteFlush(Gpu(7, 5, kRdmaWritesOrderingNone, 0));
  EXPECT_EQ(d.action, NicWriteFlush::kCannotOrder);
  EXPECT_NE(d.reason.find("GPU sm_75 without GPU_DIRECT_RDMA_WRITES_ORDERING"), std::string::npos)
      << d.reason;
  EXPECT_NE(d.reason.find("cuFlushGPUDirectRDMAWrites"), std::string::npos) << d.reason;
}

TEST(NicWriteFlushDecisionTest, ACoherentHostReceivesThroughTheDefaultMappingOnly) {
  // paths.cc:522-528: on C2C hosts a NIC that reaches the GPU over PCIe needs a flush (NCCL
  // exports with the PCIe mapping exactly then, paths.cc:477-480, and flushes with an RDMA read,
  // net_ib.cc:2429-2462). CUDA reports ALL_DEVICES there and its flush is a no-op (cuda.h:
  // 5693-5699), so RX takes the default mapping, the CPU's path, and needs none.
  const GpuWriteOrderingFacts gh200 =
      Gpu(9, 0, kRdmaWritesOrderingAllDevices, kFlushWritesOptionHost, /*coherent=*/true);
  NicWriteFlushDecision d = DecideNicWriteFlush(gh200);
  EXPECT_EQ(d.action, NicWriteFlush::kNotNeeded);
  EXPECT_EQ(d.reason.rfind("not needed: GPU sm_90 on a coherent (C2C) host", 0), 0u) << d.reason;
  EXPECT_EQ(ReceiveMappings(gh200), std::vector<DmabufMapping>{DmabufMapping::kDefault});
}

TEST(NicWriteFlushDecisionTest, ElsewhereThePcieMappingIsTriedFirst) {
  // The driver refuses a PCIe-mapped export on a host that is not coherent (open-gpu-kernel-
  // modules osapi.c RmDmabufGetClientAndDevice: "Forced PCIe mappings are to be used only on
  // coherent systems"), so the default is what binds there.
  EXPECT_EQ(ReceiveMappings(Gpu(8, 0, kRdmaWritesOrderingNone, kFlushWritesOptionHost)),
            (std::vector<DmabufMapping>{DmabufMapping::kPcieBar1, DmabufMapping::kDefault}));
}

// --- The policy object ------------------------------------------------------------------------

// The driver's answers per GPU; counts what it was asked and logs every flush in `events`.
class FakeOrderingSource final : public GpuWriteOrderingSource {
 public:
  explicit FakeOrderingSource(std::vector<std::string>* events) : events_(events) {}
  std::map<int, GpuWriteOrderingFacts> gpus;
  mutable int facts_queries = 0;

  Result<GpuWriteOrderingFacts> Facts(int gpu) const override {
    ++facts_queries;
    auto it = gpus.find(gpu);
    if (it == gpus.end()) {
      return Status::Error(ErrorKind::kSystem, "cuDeviceGet failed: invalid device ordinal");
    }
    return it->second;
  }
  Status FlushToOwner(int gpu) const override {
    events_->push_back("flush gpu " + std::to_string(gpu));
    return Status::Ok();
  }

 private:
  std::vector<std::string>* events_;
};

class NicWriteOrderingTest : public ::testing::Test {
 protected:
  std::vector<std::string> events_;
  FakeOrderingSource source_{&events_};
};

TEST_F(NicWriteOrderingTest, DecidesOncePerGpuAndFlushesOnlyWhereNeeded) {
  source_.gpus[0] = Gpu(8, 0, kRdmaWritesOrderingNone, kFlushWritesOptionHost);
  source_.gpus[1] = Gpu(9, 0, kRdmaWritesOrderingOwner, kFlushWritesOptionHost);
  NicWriteOrdering ordering(&source_);
  for (int round = 0; round < 3; ++round) {
    Result<NicWriteBarrier> ampere = ordering.BarrierFor(0);
    Result<NicWriteBarrier> hopper = ordering.BarrierFor(1);
    ASSERT_TRUE(ampere.ok()) << ampere.status().message();
    ASSERT_TRUE(hopper.ok()) << hopper.status().message();
    EXPECT_TRUE(ampere.value().BeforeGpuReads().ok());
    EXPECT_TRUE(hopper.value().BeforeGpuReads().ok());
  }
  EXPECT_EQ(source_.facts_queries, 2);  // once per GPU, whatever asks later
  EXPECT_EQ(events_, std::vector<std::string>(3, "flush gpu 0"));
}

TEST_F(NicWriteOrderingTest, HostMemoryNeedsNoBarrierAndAsksNoGpu) {
  NicWriteOrdering ordering(&source_);
  Result<NicWriteBarrier> host = ordering.BarrierFor(-1);
  ASSERT_TRUE(host.ok());
  EXPECT_FALSE(host.value().flushes());
  EXPECT_TRUE(host.value().BeforeGpuReads().ok());
  EXPECT_EQ(source_.facts_queries, 0);
  EXPECT_TRUE(events_.empty());
}

TEST_F(NicWriteOrderingTest, AGpuThatCannotBeOrderedIsRefusedBeforeBindingAndConsuming) {
  source_.gpus[0] = Gpu(7, 0, kRdmaWritesOrderingNone, 0);
  NicWriteOrdering ordering(&source_);
  Result<std::vector<DmabufMapping>> mappings = ordering.ReceiveMappingsFor(0);
  ASSERT_FALSE(mappings.ok());
  EXPECT_NE(mappings.status().message().find("GPU 0: GPU sm_70"), std::string::npos)
      << mappings.status().message();
  EXPECT_FALSE(ordering.BarrierFor(0).ok());
}

TEST_F(NicWriteOrderingTest, ADriverThatCannotAnswerIsAnErrorNamingTheGpu) {
  NicWriteOrdering ordering(&source_);
  Result<NicWriteBarrier> barrier = ordering.BarrierFor(3);
  ASSERT_FALSE(barrier.ok());
  EXPECT_NE(barrier.status().message().find("GPU 3: ordering of NIC writes"), std::string::npos)
      << barrier.status().message();
}

// --- The consumers run the barrier before a GPU engine reads ----------------------------------

// A GPU RX region whose "device memory" is host memory the fake engine can read.
class FakeGpuRegion final : public RxRegion {
 public:
  explicit FakeGpuRegion(int gpu) : gpu_(gpu), bytes_(1 << 20) {
    for (size_t i = 0; i < bytes_.size(); ++i) bytes_[i] = static_cast<char>(i * 7 + 3);
  }
  uint64_t bytes() const override { return bytes_.size(); }
  char* host_base() const override { return nullptr; }  // only a GPU engine reads it
  uint64_t device_base() const override { return reinterpret_cast<uintptr_t>(bytes_.data()); }
  int gpu() const override { return gpu_; }
  Status Write(uint64_t, const char*, size_t, CopyStream*) override {
    return Status::Error(ErrorKind::kInternal, "the NIC writes this region");
  }
  const char* data() const { return bytes_.data(); }

 private:
  int gpu_;
  std::vector<char> bytes_;
};

// Runs each submission at once on the CPU and notes it in the shared event log.
class RecordingEngine final : public gpu::ScatterEngine {
 public:
  explicit RecordingEngine(std::vector<std::string>* events) : events_(events) {}
  Result<std::optional<gpu::ScatterTicket>> Submit(const gpu::ScatterOp* ops, size_t count,
                                                   const void* region_dptr,
                                                   void* dst_dptr) override {
    events_->push_back("kernel reads");
    gpu::ExecuteScatterPlanOnHost(ops, count, static_cast<const char*>(region_dptr),
                                  static_cast<char*>(dst_dptr));
    return std::optional<gpu::ScatterTicket>(gpu::ScatterTicket{0, ++generation_});
  }
  Result<bool> Done(const gpu::ScatterTicket&) override { return true; }
  Status Synchronize() override { return Status::Ok(); }
  Result<bool> Idle() override { return true; }

 private:
  std::vector<std::string>* events_;
  uint64_t generation_ = 0;
};

OffsetTable TableOf(std::initializer_list<std::pair<uint64_t, uint32_t>> frags) {
  std::vector<StreamSegment> segments;
  for (const auto& [offset, length] : frags) {
    segments.push_back({StreamSegment::Kind::kRegion, offset, length, 0});
  }
  OffsetTable table;
  table.Append(segments.data(), segments.size(), 0);
  return table;
}

class ConsumerBarrierTest : public NicWriteOrderingTest {
 protected:
  Result<std::unique_ptr<KernelScatterConsumer>> Consumer(NicWriteOrdering& ordering) {
    ScatterEngineFactory factory = [this](int, size_t,
                                          size_t) -> Result<std::unique_ptr<gpu::ScatterEngine>> {
      return std::unique_ptr<gpu::ScatterEngine>(new RecordingEngine(&events_));
    };
    return KernelScatterConsumer::Create(region_, factory, 8, FragGeometry(),
                                         std::chrono::milliseconds(0), ordering);
  }
  std::shared_ptr<FakeGpuRegion> region_ = std::make_shared<FakeGpuRegion>(0);
};

TEST_F(ConsumerBarrierTest, TheScatterKernelStartsOnlyAfterTheFlush) {
  source_.gpus[0] = Gpu(8, 0, kRdmaWritesOrderingNone, kFlushWritesOptionHost);
  NicWriteOrdering ordering(&source_);
  Result<std::unique_ptr<KernelScatterConsumer>> consumer = Consumer(ordering);
  ASSERT_TRUE(consumer.ok()) << consumer.status().message();
  OffsetTable table = TableOf({{8192, 3000}, {4096, 1096}});
  const OffsetTable* tables[] = {&table};
  std::vector<char> dst(4096, 0);
  HeldMessage message{tables, 1, dst.size(), nullptr, dst.data()};
  ConsumerJob job;
  Result<bool> started = consumer.value()->Start(message, &job);
  ASSERT_TRUE(started.ok()) << started.status().message();
  ASSERT_TRUE(started.value());
  EXPECT_EQ(events_, (std::vector<std::string>{"flush gpu 0", "kernel reads"}));
  EXPECT_EQ(memcmp(dst.data(), region_->data() + 8192, 3000), 0);
  EXPECT_EQ(memcmp(dst.data() + 3000, region_->data() + 4096, 1096), 0);
}

TEST_F(ConsumerBarrierTest, AGpuThatOrdersItsWritesIsNeverFlushed) {
  source_.gpus[0] = Gpu(9, 0, kRdmaWritesOrderingAllDevices, kFlushWritesOptionHost);
  NicWriteOrdering ordering(&source_);
  Result<std::unique_ptr<KernelScatterConsumer>> consumer = Consumer(ordering);
  ASSERT_TRUE(consumer.ok()) << consumer.status().message();
  OffsetTable table = TableOf({{0, 2048}});
  const OffsetTable* tables[] = {&table};
  std::vector<char> dst(2048, 0);
  HeldMessage message{tables, 1, dst.size(), nullptr, dst.data()};
  ConsumerJob job;
  ASSERT_TRUE(consumer.value()->Start(message, &job).ok());
  EXPECT_EQ(events_, std::vector<std::string>{"kernel reads"});
  EXPECT_EQ(memcmp(dst.data(), region_->data(), 2048), 0);
}

TEST_F(ConsumerBarrierTest, NoScatterConsumerForAGpuWhoseWritesCannotBeOrdered) {
  source_.gpus[0] = Gpu(7, 5, kRdmaWritesOrderingNone, 0);
  NicWriteOrdering ordering(&source_);
  Result<std::unique_ptr<KernelScatterConsumer>> consumer = Consumer(ordering);
  ASSERT_FALSE(consumer.ok());
  EXPECT_NE(consumer.status().message().find("cuFlushGPUDirectRDMAWrites"), std::string::npos)
      << consumer.status().message();
}

TEST_F(NicWriteOrderingTest, AnUnpackStepWithFragsIsPublishedOnlyAfterTheFlush) {
  source_.gpus[0] = Gpu(8, 6, kRdmaWritesOrderingNone, kFlushWritesOptionHost);
  NicWriteOrdering ordering(&source_);
  Result<NicWriteBarrier> barrier = ordering.BarrierFor(0);
  ASSERT_TRUE(barrier.ok());
  std::vector<char> region(64 << 10);
  Result<std::unique_ptr<unpack::UnpackQueue>> queue = unpack::UnpackQueue::Create(
      reinterpret_cast<uintptr_t>(region.data()), 0, region.size(), barrier.value());
  ASSERT_TRUE(queue.ok()) << queue.status().message();
  // An empty step (NCCL still advances its head for it, unpack_queue.h) reads nothing: no flush,
  // as NCCL flushes only steps with bytes (net.cc:1529 `totalSize > 0`).
  Result<uint32_t> empty_slot = queue.value()->Claim();
  ASSERT_TRUE(empty_slot.ok());
  ASSERT_TRUE(queue.value()->Publish(empty_slot.value(), nullptr, 0).ok());
  EXPECT_TRUE(events_.empty());

  Result<uint32_t> slot = queue.value()->Claim();
  ASSERT_TRUE(slot.ok());
  OffsetTable table = TableOf({{4096, 100}});
  const OffsetTable* tables[] = {&table};
  ASSERT_TRUE(queue.value()->Publish(slot.value(), tables, 1).ok());
  EXPECT_EQ(events_, std::vector<std::string>{"flush gpu 0"});
  EXPECT_EQ(queue.value()->meta().cnt[slot.value()], 1u);
}

}  // namespace
}  // namespace devmem
