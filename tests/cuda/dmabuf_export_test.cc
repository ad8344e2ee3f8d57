// N2: a dmabuf whose mapping the NIC's attach refuses is exported again with the next mapping.
// The refusal is NVIDIA's nv_dma_buf_attach answering -ENOTSUPP (524) for a PCIe BAR1 (FORCE_PCIE)
// export on a coherent host whose NIC may not reach the GPU directly (open-gpu-kernel-modules
// kernel-open/nvidia/nv-dmabuf.c nv_dma_buf_attach: "topology not supported for mapping type
// FORCE_PCIE", rc = -ENOTSUPP), seen by bind-rx as errno 524 with extack "Failed to bind dmabuf
// to device" (net/core/devmem.c net_devmem_bind_dmabuf). The export and the bind are fakes: the
// real ones need a GPU and a devmem NIC.
#include "plugin/cuda/dmabuf_export.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>

#include <string>
#include <vector>

#include "tests/common/proc_counts.h"

namespace devmem {
namespace {

constexpr int kEnotsupp = 524;  // include/linux/errno.h ENOTSUPP (kernel-internal, no strerror)

// A kernel that answers bind-rx like net_devmem_bind_dmabuf on a coherent host: 524 for a dmabuf
// exported with the PCIe BAR1 mapping, success for the default one.
class FakeCoherentHost {
 public:
  // The export: a real fd per call (an eventfd stands in for the dmabuf), remembered with its
  // mapping so the bind can tell them apart, as nv_dma_buf_attach reads priv->mapping_type.
  DmabufExporter::ExportFn Export() {
    return [this](DmabufMapping mapping) -> Result<int> {
      exports.push_back(mapping);
      if (refuse_pcie_export && mapping == DmabufMapping::kPcieBar1) {
        // osapi.c RmDmabufGetClientAndDevice on a host that is not coherent.
        return Status::Error(ErrorKind::kSystem,
                             "cuMemGetHandleForAddressRange(DMA_BUF_FD, MAPPING_TYPE_PCIE) "
                             "failed: operation not supported (CUresult 801)");
      }
      const int fd = eventfd(0, EFD_CLOEXEC);
      if (fd < 0) return Status::Errno(errno, "eventfd");
      mapping_of_fd_.push_back({fd, mapping});
      return fd;
    };
  }
  std::function<Result<int>(int)> BindRx() {
    return [this](int fd) -> Result<int> {
      // Newest first: a refused dmabuf is closed before the next export, which may reuse its fd.
      for (auto it = mapping_of_fd_.rbegin(); it != mapping_of_fd_.rend(); ++it) {
        const auto& [exported, mapping] = *it;
        if (exported != fd) continue;
        binds.push_back(mapping);
        if (mapping == DmabufMapping::kPcieBar1 || refuse_default) {
          return Status::Error(ErrorKind::kSystem,
                               "bind-rx: Unknown error %d (errno %d); kernel says: Failed to bind "
                               "dmabuf to device",
                               kEnotsupp, kEnotsupp);
        }
        return 7;  // the binding id
      }
      return Status::Error(ErrorKind::kInternal, "bind of an fd that was never exported");
    };
  }
  std::vector<DmabufMapping> exports;
  std::vector<DmabufMapping> binds;
  bool refuse_pcie_export = false;
  bool refuse_default = false;

 private:
  std::vector<std::pair<int, DmabufMapping>> mapping_of_fd_;
};

const std::vector<DmabufMapping> kPcieThenDefault = {DmabufMapping::kPcieBar1,
                                                     DmabufMapping::kDefault};

TEST(DmabufExportTest, APcieExportTheAttachRefusesIsExportedAgainWithTheDefaultMapping) {
  FakeCoherentHost host;
  const int fds_before = testing::OpenFdCount();
  Result<AttachedDmabuf<int>> attached = AttachDmabuf<int>(
      DmabufExporter("GPU 0's RX region for eth1", kPcieThenDefault, host.Export()), host.BindRx());
  ASSERT_TRUE(attached.ok()) << attached.status().message();
  EXPECT_EQ(attached->mapping, DmabufMapping::kDefault);
  EXPECT_EQ(attached->attachment, 7);
  EXPECT_TRUE(attached->dmabuf.valid());
  EXPECT_EQ(testing::OpenFdCount(), fds_before + 1);  // the refused dmabuf was closed
  EXPECT_EQ(host.exports, kPcieThenDefault);
  EXPECT_EQ(host.binds, kPcieThenDefault);
}

TEST(DmabufExportTest, AnExportTheDriverRefusesMovesOnWithoutABind) {
  FakeCoherentHost host;
  host.refuse_pcie_export = true;  // every host that is not coherent
  Result<AttachedDmabuf<int>> attached = AttachDmabuf<int>(
      DmabufExporter("GPU 0's RX region for eth1", kPcieThenDefault, host.Export()), host.BindRx());
  ASSERT_TRUE(attached.ok()) << attached.status().message();
  EXPECT_EQ(attached->mapping, DmabufMapping::kDefault);
  EXPECT_EQ(host.binds, std::vector<DmabufMapping>{DmabufMapping::kDefault});
}

TEST(DmabufExportTest, WhenNoMappingAttachesTheErrorNamesEachRefusal) {
  FakeCoherentHost host;
  host.refuse_default = true;
  Result<AttachedDmabuf<int>> attached = AttachDmabuf<int>(
      DmabufExporter("GPU 0's RX region for eth1", kPcieThenDefault, host.Export()), host.BindRx());
  ASSERT_FALSE(attached.ok());
  const std::string& message = attached.status().message();
  EXPECT_NE(message.find("GPU 0's RX region for eth1: no dmabuf mapping left to try"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("PCIe BAR1 mapping refused: bind-rx: Unknown error 524"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("default mapping refused: bind-rx: Unknown error 524"), std::string::npos)
      << message;
  EXPECT_EQ(host.binds, kPcieThenDefault);  // each mapping once, then no more tries
}

TEST(DmabufExportTest, OnlyTheAllowedMappingsAreTried) {
  // A coherent host's RX (NicWriteOrdering's ReceiveMappings): the default mapping only.
  FakeCoherentHost host;
  Result<AttachedDmabuf<int>> attached = AttachDmabuf<int>(
      DmabufExporter("GPU 0's RX region for eth1", {DmabufMapping::kDefault}, host.Export()),
      host.BindRx());
  ASSERT_TRUE(attached.ok()) << attached.status().message();
  EXPECT_EQ(host.exports, std::vector<DmabufMapping>{DmabufMapping::kDefault});
}

}  // namespace
}  // namespace devmem
