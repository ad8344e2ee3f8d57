// Exporting GPU memory as a dmabuf through the lazily loaded driver, and handing that dmabuf
// to bind-rx on a NIC that cannot take it. Skips with a reason without a GPU.
#include "plugin/cuda/gpu_region.h"

#include <gtest/gtest.h>
#include <net/if.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "plugin/cuda/cuda_driver.h"
#include "plugin/devmem/netdev_netlink.h"

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

TEST_F(GpuRegionTest, BindingAGpuDmabufToAVethFailsClearly) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to create a veth";
  const std::string name = "dmgr" + std::to_string(getpid() % 100000);
  ASSERT_EQ(system(("ip link add " + name + " type veth peer name " + name + "p").c_str()), 0);
  Result<std::unique_ptr<GpuRegion>> region = GpuRegion::Create(0, 4 << 20);
  ASSERT_TRUE(region.ok()) << region.status().message();
  Result<RxQueueBinding> binding = RxQueueBinding::Bind(
      static_cast<int>(if_nametoindex(name.c_str())), region.value()->dmabuf_fd(), {0});
  system(("ip link del " + name).c_str());
  ASSERT_FALSE(binding.ok());
  EXPECT_NE(binding.status().message().find("bind-rx"), std::string::npos)
      << binding.status().message();
}

}  // namespace
}  // namespace devmem
