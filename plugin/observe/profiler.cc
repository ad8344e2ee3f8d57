#include "plugin/observe/profiler.h"

namespace devmem::observe {
namespace {
std::atomic<ProfilerSink*> g_sink{nullptr};
}  // namespace

ProfilerSink* ActiveProfiler() { return g_sink.load(std::memory_order_acquire); }
void InstallProfiler(ProfilerSink* sink) { g_sink.store(sink, std::memory_order_release); }

}  // namespace devmem::observe
