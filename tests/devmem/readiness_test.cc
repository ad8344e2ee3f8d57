// Readiness checks against the real kernel and devmem-doctor as an operator runs it. On this
// CI class of machine nothing is devmem-ready: the checks must say exactly why.
#include "plugin/setup/readiness.h"
#include "gpu/scatter_engine.h"

#include <gtest/gtest.h>
#include <net/if.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace devmem {
namespace {

const CheckOutcome* Find(const ReadinessReport& report, const std::string& check) {
  for (const CheckOutcome& c : report.checks()) {
    if (c.check == check) return &c;
  }
  return nullptr;
}

int RunCommand(const std::string& command, std::string* out) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out->append(buffer, n);
  int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(ParseQueueListTest, AcceptsListsAndRejectsGarbage) {
  EXPECT_TRUE(ParseQueueList("").value().empty());
  EXPECT_EQ(ParseQueueList("8").value(), std::vector<uint32_t>{8});
  EXPECT_EQ(ParseQueueList("8,9,15").value(), (std::vector<uint32_t>{8, 9, 15}));
  for (const char* bad : {"x", "8,", ",8", "8,8", "-1", "65536", "1 2", "8;9"}) {
    Result<std::vector<uint32_t>> parsed = ParseQueueList(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    if (!parsed.ok()) {
      EXPECT_NE(parsed.status().message().find("NCCL_DEVMEM_RX_QUEUES"), std::string::npos);
    }
  }
}

TEST(PcieDistanceTest, ComparesSysfsPaths) {
  const std::string nic = "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:00.0";
  EXPECT_EQ(PcieDistance(nic, "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0"),
            "same PCIe switch");
  EXPECT_EQ(PcieDistance(nic, "/sys/devices/pci0000:00/0000:00:03.0/0000:05:00.0"),
            "same root complex");
  EXPECT_EQ(PcieDistance(nic, "/sys/devices/pci0000:80/0000:80:01.0/0000:81:00.0"),
            "different root complexes");
  EXPECT_EQ(PcieDistance("", nic), "unknown");
}

TEST(ReadinessTest, KernelChecksPassOnADevmemKernel) {
  ReadinessReport report = CheckKernel();
  const CheckOutcome* family = Find(report, "netdev family");
  ASSERT_NE(family, nullptr);
  EXPECT_EQ(family->verdict, Verdict::kPass) << family->detail;
  const CheckOutcome* sockopts = Find(report, "devmem sockopts");
  ASSERT_NE(sockopts, nullptr);
  EXPECT_EQ(sockopts->verdict, Verdict::kPass) << sockopts->detail;
}

TEST(ReadinessTest, LoopbackIsNeverDevmemReady) {
  NetDevice lo;
  lo.name = "lo";
  lo.ifindex = static_cast<int>(if_nametoindex("lo"));
  lo.loopback = true;
  ReadinessReport report = CheckNic(lo, {});
  ASSERT_FALSE(report.ready());
  EXPECT_EQ(report.first_failure()->check, "device");
  EXPECT_NE(report.ToJson().find("\"ready\": false"), std::string::npos);
}

class VethReadinessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create a veth";
    name_ = "dmrd" + std::to_string(getpid() % 100000);
    ASSERT_EQ(system(("ip link add " + name_ + " type veth peer name " + name_ +
                      "p && ip link set " + name_ + " up")
                         .c_str()),
              0);
  }
  void TearDown() override {
    if (!name_.empty()) system(("ip link del " + name_ + " 2>/dev/null").c_str());
  }
  std::string name_;
};

TEST_F(VethReadinessTest, ChecksNameWhatAVethLacks) {
  NetDevice veth;
  veth.name = name_;
  veth.ifindex = static_cast<int>(if_nametoindex(name_.c_str()));
  veth.speed_mbps = 10000;
  veth.speed_from_driver = true;
  std::vector<uint32_t> chosen;
  ReadinessReport report = CheckNic(veth, {}, &chosen);
  EXPECT_FALSE(report.ready());
  const CheckOutcome* driver = Find(report, "driver");
  ASSERT_NE(driver, nullptr);
  EXPECT_EQ(driver->detail, "veth");
  const CheckOutcome* split = Find(report, "tcp-data-split");
  ASSERT_NE(split, nullptr);
  EXPECT_EQ(split->verdict, Verdict::kFail);
  EXPECT_NE(split->detail.find("not supported by driver"), std::string::npos) << split->detail;
  EXPECT_NE(split->fix.find("ethtool -G " + name_ + " tcp-data-split on"), std::string::npos);
  const CheckOutcome* ntuple = Find(report, "ntuple");
  ASSERT_NE(ntuple, nullptr);
  EXPECT_EQ(ntuple->verdict, Verdict::kFail);
  EXPECT_EQ(ntuple->fix, "ethtool -K " + name_ + " ntuple on");
  // Asking for a queue the veth does not have is named as such.
  report = CheckNic(veth, {7});
  const CheckOutcome* queues = Find(report, "rx queues");
  ASSERT_NE(queues, nullptr);
  EXPECT_EQ(queues->verdict, Verdict::kFail);
}

TEST_F(VethReadinessTest, DoctorReportsNotReadyWithTheFailingChecks) {
  std::string out;
  int status = RunCommand(std::string(DEVMEM_DOCTOR_PATH) + " --json --ifname " + name_, &out);
  EXPECT_EQ(status, 1) << out;  // 1 = not ready
  EXPECT_NE(out.find("\"ready\": false"), std::string::npos) << out;
  EXPECT_NE(out.find("{\"scope\": \"" + name_ +
                     "\", \"check\": \"tcp-data-split\", \"result\": "
                     "\"FAIL\", \"detail\": \"ethtool rings-get on ifindex"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("\"check\": \"ntuple\", \"result\": \"FAIL\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"check\": \"netdev family\", \"result\": \"PASS\""), std::string::npos);
  std::string text;
  EXPECT_EQ(RunCommand(std::string(DEVMEM_DOCTOR_PATH) + " --ifname " + name_, &text), 1);
  EXPECT_NE(text.find("devmem RX: NOT READY"), std::string::npos) << text;
  EXPECT_NE(text.find("[fix: ethtool -K " + name_ + " ntuple on]"), std::string::npos) << text;
}

TEST(DoctorTest, BadArgumentsExitWithTwo) {
  std::string out;
  EXPECT_EQ(RunCommand(std::string(DEVMEM_DOCTOR_PATH) + " --queues 1,x", &out), 2);
  EXPECT_NE(out.find("is not a queue id"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(RunCommand(std::string(DEVMEM_DOCTOR_PATH) + " --ifname nosuchif0", &out), 2);
  EXPECT_NE(out.find("no usable network interface"), std::string::npos) << out;
}

}  // namespace
}  // namespace devmem

namespace devmem {
namespace {

TEST(GpuConsumerCheckTest, NamesWhoConsumesGpuFragsInThisBuild) {
  ReadinessReport plugin = CheckGpuConsumer(UnpackMode::kPlugin);
  ASSERT_EQ(plugin.checks().size(), 1u);
  EXPECT_EQ(plugin.checks()[0].scope, "build");
  // This build has nvcc (CI installs the CUDA toolkit): our kernel is in it.
  EXPECT_EQ(plugin.ready(), gpu::BuiltWithCudaKernels());
  EXPECT_NE(plugin.checks()[0].detail.find("scatter kernel"), std::string::npos);
  ReadinessReport nccl = CheckGpuConsumer(UnpackMode::kNccl);
  EXPECT_TRUE(nccl.ready());
  EXPECT_NE(nccl.checks()[0].detail.find("NCCL's device unpack"), std::string::npos);
}

}  // namespace
}  // namespace devmem
