// The yardstick of the benchmarks: NCCL's own socket transport (what `NCCL_NET=Socket` runs),
// taken from an installed, unmodified NCCL library (default /usr/local/cuda/lib64/libnccl.so.2,
// the CUDA toolkit's NCCL 2.28.9) and driven through its ncclNet_v11 table like any plugin.
// Nothing of NCCL is built or kept in this repository.
//
// How the table is found. The library does not export it: `ncclNetSocket` is a local data
// symbol (src/transport/net_socket.cc:720 at v2.28.9-1 defines it; src/include/net.h:31
// declares it), so dlsym cannot see it. The library keeps its ELF symbol table (.symtab) on
// disk, though: the loader dlopens the library (RTLD_NOW | RTLD_LOCAL, as NCCL opens plugins),
// takes its load address from dlinfo(RTLD_DI_LINKMAP) and its segments from dl_iterate_phdr,
// reads .symtab from the file the dynamic linker actually opened (checking that the file's
// build-id note is the loaded one), and adds the symbol's value to the load address.
//
// What it refuses, each with a message that says why:
//   - a library whose exported ncclGetVersion() is not 22809 (2.28.9): the table's layout, its
//     NULL slots and the one CUDA call below are facts of that version only;
//   - a stripped library (no .symtab): compare through NCCL itself there
//     (perf/scripts/nccl_compare.sh runs NCCL_NET=Socket against the plugin);
//   - a table that does not look like 2.28.9's: `ncclNetSocket` must be a 176-byte object in a
//     writable segment, its name "Socket", each of its 16 function slots must point at the start
//     of the matching ncclNetSocket* function (by its mangled name in .symtab) inside the
//     library's executable segment, and the 5 slots 2.28.9 leaves NULL (regMrDmaBuf,
//     getDeviceMr, irecvConsumed, makeVDevice, setNetAttr) must be NULL.
//
// The one CUDA call. The transport's connect and accept each call cudaGetDevice()
// (net_socket.cc:395 and :437, through CUDACHECK, which returns ncclUnhandledCudaError on any
// error) before they open a socket; the device number is used for nothing but the name of the
// helper threads (net_socket.cc:512, ncclSetThreadName "NCCL Sock%c%1u%2u%2u"). NCCL links the
// CUDA runtime statically, and the runtime dlopens the driver, libcuda.so.1. On a machine
// without a CUDA driver cudaGetDevice() returns cudaErrorInsufficientDriver (35; "CUDA driver
// version is insufficient for CUDA runtime version"), so every connect and accept fails.
// What was tried, and why it is not used:
//   - an environment variable or API of the runtime that answers without a driver: none exists;
//     the runtime initialises the driver before it answers any query;
//   - another thread setup: the call is unconditional on every connect and accept;
//   - the toolkit's stub driver (lib64/stubs/libcuda.so as libcuda.so.1): the runtime answers
//     cudaErrorStubLibrary (34);
//   - a small fake libcuda.so.1 (the brief's last resort): the runtime asks it for ~435 driver
//     entry points through cuGetProcAddress and then calls cuGetExportTable, the runtime's
//     private, undocumented interface to the driver; a fake of that would be guesswork about
//     NVIDIA internals, not an honest stand-in.
// What is done instead, and only when needed: the loader calls the library's own cudaGetDevice
// (a local function of the statically linked runtime, found in .symtab) once. With a driver it
// succeeds and nothing is touched: the library runs exactly as installed. Without one (errors
// 34, 35 or 100, cudaErrorNoDevice) the loader replaces, in this process's in-memory copy of
// the library only, the first 9 bytes of that cudaGetDevice with "*device = 0; return
// cudaSuccess" (the answer the runtime gives a thread that never selected a device), then calls
// it again to prove the answer. The file on disk is not modified; the transport's own code is
// not touched; what changes is one answer of the CUDA runtime, whose only use by the transport
// is a thread name. Any other error code is refused. description() says which case ran, and
// the benchmarks print it.
#pragma once

#include <memory>
#include <string>

#include "plugin/abi/net_abi.h"

namespace devmem::perf {

inline constexpr const char* kInstalledNcclDefaultPath = "/usr/local/cuda/lib64/libnccl.so.2";
inline constexpr int kInstalledNcclVersion = 22809;  // ncclGetVersion() of NCCL 2.28.9

// The socket transport of one loaded libnccl.so.2. The library stays loaded while this lives.
class InstalledNcclSocket final {
 public:
  // Loads the library at `path` and checks it (see above); nullptr with *error set when it
  // refuses.
  static std::unique_ptr<InstalledNcclSocket> Open(const std::string& path, std::string* error);

  InstalledNcclSocket(const InstalledNcclSocket&) = delete;
  InstalledNcclSocket& operator=(const InstalledNcclSocket&) = delete;
  ~InstalledNcclSocket();

  const abi::NetV11* table() const { return table_; }
  // One line for the benchmark's header: library path, version, how cudaGetDevice is answered.
  const std::string& description() const { return description_; }

 private:
  InstalledNcclSocket() = default;

  void* handle_ = nullptr;  // dlopen handle
  const abi::NetV11* table_ = nullptr;
  std::string description_;
};

}  // namespace devmem::perf
