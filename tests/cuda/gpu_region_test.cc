// Exporting GPU memory as a dmabuf through the lazily loaded driver, and handing that dmabuf
// to bind-rx on a NIC that cannot take it; what the driver says about ordering NIC writes into
// GPU 0 (N1) and the mapping an RX export gets (N2). Skips with a reason without a GPU.
#include "plugin/cuda/gpu_region.h"

#include <gtest/gtest.h>
#include <net/if.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "plugin/cuda/cuda_driver.h"
#include "plugin/cuda/dmabuf_export.h"
#include "plugin/cuda/nic_write_ordering.h"
#include "plugin/devmem/netdev_netlink.h"
#include "plugin/setup/tx_setup.h"

namespace devmem {
namespace {

class GpuRegionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<const CudaDriver*> driver = CudaDriver::Get();
    if (!driver.ok()) GTEST_SKIP() << "no CUDA driver: " << driver.status().message();
    Result<int> count = driver.value()->DeviceCount();
    if (!count.ok() || count.value() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(GpuRegionTest, ExportsADmabufOfTheRoundedSize) {
  Result<std::unique_ptr<GpuRegion>> region = GpuRegion::Create(0, (16 << 20) + 1);
  ASSERT_TRUE(region.ok()) << region.status().message();
  EXPECT_EQ(region.value()->bytes(), 18u << 20);
  ASSERT_GE(region.value()->dmabuf_fd(), 0);
  EXPECT_EQ(lseek(region.value()->dmabuf_fd(), 0, SEEK_END), static_cast<off_t>(18u << 20));
  EXPECT_NE(region.value()->device_ptr(), 0u);
}

// A veth pair for one test, deleted when the test ends (also when an ASSERT returns early).
// Create() says why it could not make one, so the caller skips with that reason: the GPU host
// may have no `ip` binary or a kernel without the veth module (review F21).
class ScopedVeth {
 public:
  ~ScopedVeth() {
    if (created_) {
      const int rc = system(("ip link del " + name_ + " 2>/dev/null").c_str());
      (void)rc;  // best effort: the peer goes with it, and a failure here changes no result
    }
  }
  // Empty on success, else the reason.
  std::string Create(const std::string& name) {
    if (system("command -v ip >/dev/null 2>&1") != 0) {
      return "no `ip` command (iproute2) to create a veth pair";
    }
    name_ = name;
    const std::string command = "ip link add " + name + " type veth peer name " + name + "p";
    FILE* pipe = popen((command + " 2>&1").c_str(), "r");
    if (pipe == nullptr) return "popen(\"" + command + "\") failed";
    std::string output;
    char buffer[256];
    while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
    const int status = pclose(pipe);
    if (status != 0) {
      while (!output.empty() && output.back() == '\n') output.pop_back();
      return "`" + command + "` failed (" + (output.empty() ? "no output" : output) +
             "); the kernel may lack the veth module";
    }
    created_ = true;
    return "";
  }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  bool created_ = false;
};

TEST_F(GpuRegionTest, BindingAGpuDmabufToAVethFailsClearly) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to create a veth";
  ScopedVeth veth;
  const std::string why_not = veth.Create("dmgr" + std::to_string(getpid() % 100000));
  if (!why_not.empty()) GTEST_SKIP() << why_not;
  const int ifindex = static_cast<int>(if_nametoindex(veth.name().c_str()));
  ASSERT_GT(ifindex, 0) << veth.name() << " has no ifindex right after `ip link add`";
  Result<std::unique_ptr<GpuRegion>> region = GpuRegion::Create(0, 4 << 20);
  ASSERT_TRUE(region.ok()) << region.status().message();
  Result<RxQueueBinding> binding = RxQueueBinding::Bind(ifindex, region.value()->dmabuf_fd(), {0});
  ASSERT_FALSE(binding.ok());
  EXPECT_NE(binding.status().message().find("bind-rx"), std::string::npos)
      << binding.status().message();
}

// Devmem TX's binder on real GPU memory: it finds the CUDA allocation a send buffer lies in
// (cuMemGetAddressRange), exports the whole allocation (cuMemGetHandleForAddressRange) and
// hands it to bind-tx, which loopback's driver refuses ("Driver does not support netmem TX").
// The error must name the whole allocation: the lookup and the export worked.
TEST_F(GpuRegionTest, TheTxBinderExportsTheWholeAllocationOfASendBuffer) {
  const CudaDriver* driver = CudaDriver::Get().value();
  Result<ScopedDeviceContext> context = driver->EnterDevice(0);
  ASSERT_TRUE(context.ok()) << context.status().message();
  constexpr size_t kBytes = 8 << 20;
  CudaDriver::CUdeviceptr base = 0;
  ASSERT_TRUE(driver->Allocate(kBytes, &base).ok());
  Result<CudaDriver::AllocationRange> range = driver->AllocationOf(base + (3 << 20));
  ASSERT_TRUE(range.ok()) << range.status().message();
  EXPECT_EQ(range->base, base);
  EXPECT_EQ(range->bytes, kBytes);
  TxBinder binder(RealTxBinderOps());
  const int lo = static_cast<int>(if_nametoindex("lo"));
  Result<TxMapping> mapping = binder.Map(lo, reinterpret_cast<void*>(base + (1 << 20)), 1 << 20);
  ASSERT_FALSE(mapping.ok());
  const std::string& message = mapping.status().message();
  EXPECT_NE(message.find("bind-tx of CUDA allocation"), std::string::npos) << message;
  EXPECT_NE(message.find("+8388608"), std::string::npos) << message;
  EXPECT_NE(message.find("netmem TX"), std::string::npos) << message;
  // Host memory is no CUDA allocation: refused at the first step.
  static char host_buffer[4096];
  Result<TxMapping> host = binder.Map(lo, host_buffer, sizeof(host_buffer));
  ASSERT_FALSE(host.ok());
  EXPECT_NE(host.status().message().find("finding the CUDA allocation"), std::string::npos)
      << host.status().message();
  driver->Free(base);
}

TEST_F(GpuRegionTest, TheDriverReportsAKnownOrderingScope) {
  Result<GpuWriteOrderingFacts> facts = CudaWriteOrderingSource().Facts(0);
  ASSERT_TRUE(facts.ok()) << facts.status().message();
  const GpuWriteOrderingFacts& ordering = facts.value();
  // CUGPUDirectRDMAWritesOrdering (cuda.h, CUDA 13.0 l.4974-4976): 0, 100 or 200.
  EXPECT_TRUE(ordering.rdma_writes_ordering == kRdmaWritesOrderingNone ||
              ordering.rdma_writes_ordering == kRdmaWritesOrderingOwner ||
              ordering.rdma_writes_ordering == kRdmaWritesOrderingAllDevices)
      << ordering.rdma_writes_ordering;
  EXPECT_GE(ordering.compute_major, 5);
  NicWriteFlushDecision decision = DecideNicWriteFlush(ordering);
  RecordProperty("decision", decision.reason);
  // NCCL skips the flush from sm_90 on (src/graph/paths.cc:520-521); the driver of such a GPU
  // should agree that it orders NIC writes itself.
  if (ordering.compute_major >= 9) {
    EXPECT_EQ(decision.action, NicWriteFlush::kNotNeeded) << decision.reason;
  }
}

TEST_F(GpuRegionTest, TheFlushRunsInTheGpusPrimaryContext) {
  Result<GpuWriteOrderingFacts> facts = CudaWriteOrderingSource().Facts(0);
  ASSERT_TRUE(facts.ok()) << facts.status().message();
  const GpuWriteOrderingFacts& ordering = facts.value();
  if ((ordering.flush_options & kFlushWritesOptionHost) == 0) {
    GTEST_SKIP() << "the driver offers no cuFlushGPUDirectRDMAWrites on GPU 0";
  }
  Status flushed = CudaWriteOrderingSource().FlushToOwner(0);
  EXPECT_TRUE(flushed.ok()) << flushed.message();
}

TEST_F(GpuRegionTest, AnRxRegionExportsWithAMappingTheDriverAllows) {
  Result<std::unique_ptr<GpuRegion>> region = GpuRegion::Create(0, 4 << 20, false);
  ASSERT_TRUE(region.ok()) << region.status().message();
  Result<DmabufExporter> exporter = DmabufExporter::ForNicReceive(
      0, region.value()->device_ptr(), region.value()->bytes(), "GPU 0's test region");
  ASSERT_TRUE(exporter.ok()) << exporter.status().message();
  Result<ExportedDmabuf> exported = exporter->Next();
  ASSERT_TRUE(exported.ok()) << exported.status().message();
  EXPECT_EQ(lseek(exported->fd.get(), 0, SEEK_END), static_cast<off_t>(4 << 20));
  // Either way the default mapping: a coherent host's RX may take no other (ReceiveMappings), and
  // elsewhere the driver refuses the PCIe one (open-gpu-kernel-modules osapi.c
  // RmDmabufGetClientAndDevice: "Forced PCIe mappings are to be used only on coherent systems").
  EXPECT_EQ(exported->mapping, DmabufMapping::kDefault) << exporter->refusals();
}

}  // namespace
}  // namespace devmem
