#include "gpu/scatter_plan.h"
#include "gpu/scatter_engine.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <tuple>
#include <vector>

namespace devmem::gpu {
namespace {

TEST(ScatterPlanTest, SplitsLongEntriesAndKeepsOrderAndCoverage) {
  std::vector<ScatterEntry> entries = {{0, 0, 10}, {100, 10, 200000}, {300000, 200010, 65536}};
  std::vector<ScatterOp> ops;
  BuildScatterPlan(entries, &ops, 65536);
  ASSERT_EQ(ops.size(), 1u + 4u + 1u);  // 200000 = 3 x 65536 + 3392
  uint64_t dst = 0;
  for (const ScatterOp& op : ops) {
    EXPECT_LE(op.length, 65536u);
    EXPECT_EQ(op.dst_offset, dst);  // contiguous destination, in order
    dst += op.length;
  }
  EXPECT_EQ(dst, 10u + 200000u + 65536u);
  EXPECT_EQ(ops[1].src_offset, 100u);
  EXPECT_EQ(ops[2].src_offset, 100u + 65536u);
}

TEST(ScatterPlanTest, HostExecutionMatchesTheOffsetTableScatter) {
  std::vector<char> region(1 << 20);
  std::iota(region.begin(), region.end(), 7);
  std::mt19937 rng(9);
  OffsetTable table;
  std::vector<StreamSegment> segments;
  for (int i = 0; i < 500; ++i) {
    const uint32_t len = 1 + rng() % 6000;
    const uint64_t src = rng() % (region.size() - len);
    segments.push_back({StreamSegment::Kind::kRegion, src, len, 0});
  }
  const uint64_t total = table.Append(segments.data(), segments.size(), 3);
  std::vector<char> expected(total, 0), actual(total, 0);
  ASSERT_TRUE(HostScatter(table, region.data(), region.size(), expected.data(), total).ok());
  std::vector<ScatterOp> ops;
  BuildScatterPlan(table.entries(), &ops, 4096);
  ExecuteScatterPlanOnHost(ops.data(), ops.size(), region.data(), actual.data());
  EXPECT_EQ(actual, expected);
}

TEST(ScatterEngineTest, CreateFailsCleanlyWithoutAGpu) {
  Result<std::unique_ptr<ScatterEngine>> engine = CreateCudaScatterEngine(0, 1024, 8);
  if (engine.ok()) GTEST_SKIP() << "a GPU is present; the gpu-labelled tests cover the engine";
  EXPECT_FALSE(engine.status().message().empty());
}

TEST(ScatterEngineTest, CreateRejectsNoDeviceNoOpsOrNoSlotsBeforeLookingForAGpu) {
  if (!BuiltWithCudaKernels()) GTEST_SKIP() << "built without nvcc: every creation fails alike";
  for (auto [device, max_ops, slots] :
       {std::tuple<int, size_t, size_t>{-1, 1024, 8}, {0, 0, 8}, {0, 1024, 0}}) {
    Result<std::unique_ptr<ScatterEngine>> engine = CreateCudaScatterEngine(device, max_ops, slots);
    ASSERT_FALSE(engine.ok());
    EXPECT_EQ(engine.status().kind(), ErrorKind::kInvalidArgument)
        << device << " " << max_ops << " " << slots << ": " << engine.status().message();
  }
}

}  // namespace
}  // namespace devmem::gpu
