// The few symbols NCCL's socket transport (src/transport/net_socket.cc) takes from NCCL's core,
// so that the transport builds, unchanged, as an external plugin: the yardstick our host path
// is measured against (perf/compare_nccl_socket.sh). build.sh compiles this file together with
// net_socket.cc, misc/socket.cc, misc/param.cc and misc/utils.cc of an NCCL source tree.
//
// Each stand-in does what NCCL's core does for the transport, minus the parts a plugin cannot
// have (CUDA, NCCL's own log file): the transport must behave as inside NCCL, or the
// comparison measures the shim.
#include <pthread.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

#include "debug.h"
#include "env.h"
#include "nccl_net.h"
#include "param.h"

// --- Logging: NCCL's macros (WARN, INFO) call ncclDebugLog; it forwards to the logger the
// host passed to init(), which filters by level as NCCL's own logger does for any plugin.
// Everything up to INFO reaches that logger; TRACE is compiled out as in NCCL release builds.
int ncclDebugLevel = NCCL_LOG_INFO;
uint64_t ncclDebugMask = ~uint64_t{0};
thread_local int ncclDebugNoWarn = 0;

namespace {
std::atomic<ncclDebugLogger_t> host_logger{nullptr};
}  // namespace

void ncclDebugLog(ncclDebugLogLevel level, unsigned long flags, const char* filefunc, int line,
                  const char* fmt, ...) {
  // NOWARN(): NCCL demotes an expected WARN (e.g. a connect retry) to INFO of the given subsystem.
  if (ncclDebugNoWarn != 0 && level == NCCL_LOG_WARN) {
    level = NCCL_LOG_INFO;
    flags = static_cast<unsigned long>(ncclDebugNoWarn);
  }
  char message[1024];
  va_list args;
  va_start(args, fmt);
  vsnprintf(message, sizeof(message), fmt, args);
  va_end(args);
  ncclDebugLogger_t log = host_logger.load(std::memory_order_acquire);
  if (log != nullptr) {
    log(level, flags, filefunc, line, "%s", message);
  } else if (level == NCCL_LOG_WARN) {  // before init(): nowhere else to say it
    fprintf(stderr, "NCCL socket yardstick WARN %s:%d %s\n", filefunc, line, message);
  }
}

// NCCL names its helper threads only when NCCL_SET_THREAD_NAME=1 (src/debug.cc).
NCCL_PARAM(SetThreadName, "SET_THREAD_NAME", 0);

void ncclSetThreadName(pthread_t thread, const char* fmt, ...) {
  if (ncclParamSetThreadName() != 1) return;
  char name[NCCL_THREAD_NAMELEN];
  va_list args;
  va_start(args, fmt);
  vsnprintf(name, sizeof(name), fmt, args);
  va_end(args);
  pthread_setname_np(thread, name);
}

// --- Configuration: NCCL's default env plugin (src/plugin/env/env_v1.cc) reads the process
// environment after initEnv() (param.cc) has applied NCCL_CONF_FILE, ~/.nccl.conf and
// /etc/nccl.conf; so does this.
ncclResult_t ncclInitEnv() {
  initEnv();
  return ncclSuccess;
}

const char* ncclEnvPluginGetEnv(const char* name) { return getenv(name); }

// --- CUDA: the transport asks for the current device only to put it in helper-thread names;
// no CUDA runtime is loaded, and these stay inside the plugin (hidden visibility).
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

const char* cudaGetErrorString(cudaError_t /*error*/) {
  return "no CUDA runtime in the NCCL socket yardstick";
}

// --- The exported table: NCCL's own, with init() first capturing the host's logger (NCCL's
// built-in transport ignores that argument: inside NCCL, ncclDebugLog is the logger).
extern ncclNet_t ncclNetSocket;  // src/transport/net_socket.cc

namespace {

ncclResult_t InitCapturingLogger(void** ctx, uint64_t comm_id, ncclNetCommConfig_t* config,
                                 ncclDebugLogger_t logger, ncclProfilerCallback_t profiler) {
  host_logger.store(logger, std::memory_order_release);
  return ncclNetSocket.init(ctx, comm_id, config, logger, profiler);
}

ncclNet_v11_t PluginTable() {
  ncclNet_v11_t table = ncclNetSocket;  // constant-initialized: ready before this runs
  table.init = InitCapturingLogger;
  return table;
}

}  // namespace

extern "C" {
__attribute__((visibility("default"))) ncclNet_v11_t ncclNetPlugin_v11 = PluginTable();
}
