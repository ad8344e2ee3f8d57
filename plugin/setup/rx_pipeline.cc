#include "plugin/setup/rx_pipeline.h"

#include "plugin/consumers/host_scatter_consumer.h"
#include "plugin/consumers/kernel_scatter_consumer.h"
#include "plugin/core/log.h"
#include "plugin/cuda/copy_stream.h"

namespace devmem {
namespace {

// Emulation: each data socket's receiver draws its frag sizes from its own stream.
constexpr uint64_t kEmulationSeedStep = 0x9e3779b97f4a7c15ull;

Status AddReceivers(RxPath* path, size_t data_sockets, const std::string& name,
                    RxPipeline* rx) {
  if (path->mode == RxPath::Mode::kDevmem) {
    if (path->receivers.size() != data_sockets) {
      return Status::Error(ErrorKind::kInternal, "%s: devmem RX set up without receivers",
                           name.c_str());
    }
    rx->receivers = std::move(path->receivers);
    return Status::Ok();
  }
  rx->pool_pages = std::make_unique<PagePool>(rx->region->bytes(), path->geometry.niov_bytes());
  for (size_t s = 0; s < data_sockets; ++s) {
    Result<std::unique_ptr<EmulatedFragReceiver>> receiver =
        EmulatedFragReceiver::Create(rx->region.get(), rx->pool_pages.get(), path->mix,
                                     kEmulationSeedStep * (s + 1), path->gpu_work_limit);
    if (!receiver.ok()) return receiver.status().WithContext(name);
    rx->receivers.push_back(std::move(receiver).value());
  }
  return Status::Ok();
}

// A GPU region needs a GPU consumer; NCCL's unpack handles SIMPLE steps and the comm's own
// consumer the rest (LL/LL128 receives).
Status AddConsumers(const RxPath& path, const std::string& name, RxPipeline* rx) {
  const bool gpu_region = rx->region->host_base() == nullptr;
  if (gpu_region) WarnIfMpsSharesWorkQueues(rx->region->gpu());
  if (gpu_region || path.engine_factory) {
    ScatterEngineFactory factory = path.engine_factory
                                       ? path.engine_factory
                                       : ScatterEngineFactory(gpu::CreateCudaScatterEngine);
    Result<std::unique_ptr<KernelScatterConsumer>> consumer = KernelScatterConsumer::Create(
        rx->region, factory, path.scatter_slots, path.geometry, path.gpu_work_limit);
    if (!consumer.ok()) return consumer.status().WithContext(name);
    rx->consumer = std::move(consumer).value();
  } else {
    rx->consumer = std::make_unique<HostScatterConsumer>(rx->region.get());
  }
  rx->consumer_name = rx->consumer->name();
  if (path.unpack == UnpackMode::kNccl) {
    Result<std::unique_ptr<NcclUnpackConsumer>> unpack =
        NcclUnpackConsumer::Create(rx->region.get());
    if (!unpack.ok()) return unpack.status().WithContext(name);
    rx->unpack = std::move(unpack).value();
    rx->consumer_name = "NCCL device unpack (SIMPLE) + plugin consumer (LL)";
  }
  return Status::Ok();
}

std::string DevmemPathSummary(const RxPath& path, const RxPipeline& rx) {
  const RxRegion& region = *rx.region;
  if (path.mode == RxPath::Mode::kDevmem) {
    return Format("DEVMEM RX: payload lands in a %llu-byte GPU region bound to the NIC (GPU %d); "
                  "frags consumed by the %s",
                  static_cast<unsigned long long>(region.bytes()), region.gpu(), rx.consumer_name);
  }
  return Format(
      "EMULATED devmem RX (NCCL_DEVMEM_EMULATE=1, a test mode: no NIC writes here): %llu-byte %s "
      "region (GPU %d) of %zu %u-byte pages, %d%% split and %d%% linear frags; frags consumed by "
      "the %s%s",
      static_cast<unsigned long long>(region.bytes()),
      region.host_base() == nullptr ? "GPU" : "host", region.gpu(), rx.pool_pages->total_pages(),
      rx.pool_pages->page_bytes(), path.mix.split_percent, path.mix.linear_percent,
      rx.consumer_name,
      rx.unpack != nullptr && !rx.unpack->device_visible()
          ? " (no CUDA driver: metadata in plain host memory, host readers only)"
          : "");
}

}  // namespace

Result<RxPipeline> BuildRxPipeline(RxPath path, size_t data_sockets, const std::string& name) {
  RxPipeline rx;
  rx.keep_alive = std::move(path.keep_alive);
  rx.gpu_work_limit = path.gpu_work_limit;
  rx.mode = path.mode;
  if (path.mode == RxPath::Mode::kPlain) {
    rx.plain_reason = path.plain_reason.empty() ? "not configured" : path.plain_reason;
    rx.summary = Format(
        "plain-TCP data path (devmem RX unavailable: %s; NCCL_DEVMEM_REQUIRE=1 makes this an "
        "error)",
        rx.plain_reason.c_str());
    log::Info(log::kNet, "%s: %s", name.c_str(), rx.summary.c_str());
    return rx;
  }
  // The region frags land in: a slice of its GPU's arena, set up by the listener.
  if (path.region == nullptr) {
    return Status::Error(ErrorKind::kInternal, "%s: devmem RX set up without a region",
                         name.c_str());
  }
  rx.region = std::move(path.region);
  DEVMEM_RETURN_IF_ERROR(AddReceivers(&path, data_sockets, name, &rx));
  DEVMEM_RETURN_IF_ERROR(AddConsumers(path, name, &rx));
  rx.summary = DevmemPathSummary(path, rx);
  log::Info(log::kNet, "%s: %s", name.c_str(), rx.summary.c_str());
  return rx;
}

}  // namespace devmem
