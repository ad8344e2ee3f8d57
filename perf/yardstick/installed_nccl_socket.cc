// See installed_nccl_socket.h: why the table is looked up in .symtab, what is checked, and how
// cudaGetDevice is answered on a machine without a CUDA driver.
#include "perf/yardstick/installed_nccl_socket.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

namespace devmem::perf {
namespace {

std::string ErrnoText(const std::string& what) { return what + ": " + strerror(errno); }

std::string Hex(uint64_t value) {
  char text[24];
  snprintf(text, sizeof(text), "0x%" PRIx64, value);
  return text;
}

// A file mapped read-only; unmapped on destruction.
class MappedFile final {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_);
  }

  bool Open(const std::string& path, std::string* error) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      *error = ErrnoText("open " + path);
      return false;
    }
    struct stat st {};
    void* data = MAP_FAILED;
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
      data = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    }
    const int saved = errno;
    close(fd);
    if (data == MAP_FAILED) {
      errno = saved;
      *error = ErrnoText("map " + path);
      return false;
    }
    data_ = static_cast<const uint8_t*>(data);
    size_ = static_cast<size_t>(st.st_size);
    return true;
  }
  // A pointer to `count` objects of T at `offset`, or nullptr when they are not all in the file.
  template <typename T>
  const T* At(uint64_t offset, uint64_t count = 1) const {
    if (offset > size_ || count > (size_ - offset) / sizeof(T)) return nullptr;
    return reinterpret_cast<const T*>(data_ + offset);
  }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

struct Symbol {
  uint64_t value = 0;  // address relative to the load address
  uint64_t size = 0;
  unsigned type = 0;  // STT_*
};

// The parts of an x86-64 shared object's file this loader reads: .symtab and its strings, and
// the program headers (for the build-id note).
class ElfFile final {
 public:
  bool Open(const std::string& path, std::string* error) {
    path_ = path;
    if (!file_.Open(path, error)) return false;
    const auto* header = file_.At<Elf64_Ehdr>(0);
    if (header == nullptr || memcmp(header->e_ident, ELFMAG, SELFMAG) != 0 ||
        header->e_ident[EI_CLASS] != ELFCLASS64 || header->e_ident[EI_DATA] != ELFDATA2LSB ||
        header->e_machine != EM_X86_64 || header->e_type != ET_DYN) {
      *error = path + " is not an x86-64 ELF shared object";
      return false;
    }
    programs_ = file_.At<Elf64_Phdr>(header->e_phoff, header->e_phnum);
    sections_ = file_.At<Elf64_Shdr>(header->e_shoff, header->e_shnum);
    if (programs_ == nullptr || sections_ == nullptr || header->e_shentsize != sizeof(Elf64_Shdr)) {
      *error = path + ": program or section headers lie outside the file";
      return false;
    }
    program_count_ = header->e_phnum;
    for (unsigned i = 0; i < header->e_shnum; ++i) {
      const Elf64_Shdr& section = sections_[i];
      if (section.sh_type != SHT_SYMTAB || section.sh_link >= header->e_shnum) continue;
      const Elf64_Shdr& strings = sections_[section.sh_link];
      symbols_ = file_.At<Elf64_Sym>(section.sh_offset, section.sh_size / sizeof(Elf64_Sym));
      strings_ = file_.At<char>(strings.sh_offset, strings.sh_size);
      symbol_count_ = section.sh_size / sizeof(Elf64_Sym);
      strings_size_ = strings.sh_size;
    }
    if (symbols_ == nullptr || strings_ == nullptr) {
      *error = path +
               " has no symbol table (.symtab: the library is stripped), so NCCL's socket "
               "transport cannot be found in it; compare through NCCL itself instead "
               "(perf/scripts/nccl_compare.sh runs NCCL_NET=Socket against the plugin)";
      return false;
    }
    return true;
  }

  // The first symbol named `name` of type `type` (STT_OBJECT, STT_FUNC) that has an address.
  std::optional<Symbol> Find(std::string_view name, unsigned type) const {
    for (uint64_t i = 0; i < symbol_count_; ++i) {
      const Elf64_Sym& s = symbols_[i];
      if (ELF64_ST_TYPE(s.st_info) == type && s.st_shndx != SHN_UNDEF && NameOf(s) == name) {
        return Symbol{s.st_value, s.st_size, type};
      }
    }
    return std::nullopt;
  }
  // The name of the function that starts at `value`, or "" when none does.
  std::string_view FunctionAt(uint64_t value) const {
    for (uint64_t i = 0; i < symbol_count_; ++i) {
      const Elf64_Sym& s = symbols_[i];
      if (ELF64_ST_TYPE(s.st_info) == STT_FUNC && s.st_value == value) return NameOf(s);
    }
    return {};
  }
  // The bytes of the PT_NOTE segment (the build-id), to compare with the loaded copy.
  std::string_view Notes() const {
    for (unsigned i = 0; i < program_count_; ++i) {
      if (programs_[i].p_type != PT_NOTE) continue;
      const char* bytes = file_.At<char>(programs_[i].p_offset, programs_[i].p_filesz);
      if (bytes != nullptr) return {bytes, programs_[i].p_filesz};
    }
    return {};
  }
  const std::string& path() const { return path_; }

 private:
  std::string_view NameOf(const Elf64_Sym& s) const {
    if (s.st_name >= strings_size_) return {};
    return {strings_ + s.st_name, strnlen(strings_ + s.st_name, strings_size_ - s.st_name)};
  }

  std::string path_;
  MappedFile file_;
  const Elf64_Phdr* programs_ = nullptr;
  const Elf64_Shdr* sections_ = nullptr;
  unsigned program_count_ = 0;
  const Elf64_Sym* symbols_ = nullptr;
  const char* strings_ = nullptr;
  uint64_t symbol_count_ = 0;
  uint64_t strings_size_ = 0;
};

// Where the dynamic linker put the library: its load address and its segments.
struct LoadedImage {
  struct Segment {
    uintptr_t start, end;
    uint32_t flags;  // PF_R | PF_W | PF_X
  };
  uintptr_t base = 0;
  std::string path;  // the file the dynamic linker opened
  std::vector<Segment> segments;
  std::string_view notes;  // the loaded PT_NOTE segment

  // The flags of the segment holding [address, address + size), or 0 when none holds it all.
  uint32_t FlagsOf(uintptr_t address, size_t size) const {
    for (const Segment& s : segments) {
      if (address >= s.start && address <= s.end && size <= s.end - address) return s.flags;
    }
    return 0;
  }
};

bool Locate(void* handle, LoadedImage* image, std::string* error) {
  link_map* map = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &map) != 0 || map == nullptr) {
    *error = std::string("dlinfo(RTLD_DI_LINKMAP) failed: ") + dlerror();
    return false;
  }
  image->base = map->l_addr;
  image->path = map->l_name;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        auto* img = static_cast<LoadedImage*>(data);
        if (info->dlpi_addr != img->base || img->path != info->dlpi_name) return 0;
        for (unsigned i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& p = info->dlpi_phdr[i];
          const uintptr_t start = info->dlpi_addr + p.p_vaddr;
          if (p.p_type == PT_LOAD) img->segments.push_back({start, start + p.p_memsz, p.p_flags});
          if (p.p_type == PT_NOTE) img->notes = {reinterpret_cast<const char*>(start), p.p_memsz};
        }
        return 1;
      },
      image);
  if (image->segments.empty()) {
    *error = "dl_iterate_phdr did not list " + image->path;
    return false;
  }
  return true;
}

bool CheckVersion(void* handle, const std::string& path, int* version, std::string* error) {
  using GetVersion = int (*)(int*);
  auto get_version = reinterpret_cast<GetVersion>(dlsym(handle, "ncclGetVersion"));
  if (get_version == nullptr || get_version(version) != 0) {
    *error = path + " exports no working ncclGetVersion: not an NCCL library";
    return false;
  }
  if (*version != kInstalledNcclVersion) {
    *error = path + " is NCCL " + std::to_string(*version) + ", the yardstick loader knows only " +
             std::to_string(kInstalledNcclVersion) +
             " (2.28.9): its socket transport's table layout and its one CUDA call are checked "
             "for that version; use an NCCL 2.28.9 library or compare through NCCL itself "
             "(perf/scripts/nccl_compare.sh)";
    return false;
  }
  return true;
}

// One slot of the v11 table: the ncclNetSocket* function 2.28.9 puts there (net_socket.cc:720),
// or nullptr where it leaves the slot NULL.
struct Slot {
  const char* field;
  const void* value;
  const char* function;
};

bool CheckTable(const ElfFile& elf, const LoadedImage& image, const abi::NetV11* table,
                std::string* error) {
  const auto where = reinterpret_cast<uintptr_t>(table);
  if ((image.FlagsOf(where, sizeof(*table)) & PF_W) == 0) {
    *error = "ncclNetSocket does not lie in a writable segment of " + image.path;
    return false;
  }
  const auto name = reinterpret_cast<uintptr_t>(table->name);
  if (image.FlagsOf(name, 7) == 0 || memcmp(table->name, "Socket", 7) != 0) {
    *error = "ncclNetSocket's name is not \"Socket\" inside " + image.path;
    return false;
  }
  auto fn = [](auto pointer) { return reinterpret_cast<const void*>(pointer); };
  const Slot slots[] = {
      {"init", fn(table->init), "ncclNetSocketInit"},
      {"devices", fn(table->devices), "ncclNetSocketDevices"},
      {"getProperties", fn(table->getProperties), "ncclNetSocketGetProperties"},
      {"listen", fn(table->listen), "ncclNetSocketListen"},
      {"connect", fn(table->connect), "ncclNetSocketConnect"},
      {"accept", fn(table->accept), "ncclNetSocketAccept"},
      {"regMr", fn(table->regMr), "ncclNetSocketRegMr"},
      {"regMrDmaBuf", fn(table->regMrDmaBuf), nullptr},
      {"deregMr", fn(table->deregMr), "ncclNetSocketDeregMr"},
      {"isend", fn(table->isend), "ncclNetSocketIsend"},
      {"irecv", fn(table->irecv), "ncclNetSocketIrecv"},
      {"iflush", fn(table->iflush), "ncclNetSocketIflush"},
      {"test", fn(table->test), "ncclNetSocketTest"},
      {"closeSend", fn(table->closeSend), "ncclNetSocketClose"},
      {"closeRecv", fn(table->closeRecv), "ncclNetSocketClose"},
      {"closeListen", fn(table->closeListen), "ncclNetSocketCloseListen"},
      {"getDeviceMr", fn(table->getDeviceMr), nullptr},
      {"irecvConsumed", fn(table->irecvConsumed), nullptr},
      {"makeVDevice", fn(table->makeVDevice), nullptr},
      {"finalize", fn(table->finalize), "ncclNetSocketFinalize"},
      {"setNetAttr", fn(table->setNetAttr), nullptr},
  };
  static_assert(sizeof(slots) / sizeof(slots[0]) == (sizeof(abi::NetV11) - sizeof(char*)) / 8);
  for (const Slot& slot : slots) {
    const std::string what = std::string("ncclNetSocket.") + slot.field;
    if (slot.function == nullptr) {
      if (slot.value != nullptr) {
        *error = what + " is set where NCCL 2.28.9 leaves it NULL: not the expected table";
        return false;
      }
      continue;
    }
    const auto address = reinterpret_cast<uintptr_t>(slot.value);
    if (slot.value == nullptr || (image.FlagsOf(address, 1) & PF_X) == 0) {
      *error = what + " does not point into the executable segment of " + image.path;
      return false;
    }
    // C++ functions: the mangled name is _Z<length><name><parameters>.
    const std::string prefix =
        "_Z" + std::to_string(strlen(slot.function)) + std::string(slot.function);
    const std::string_view found = elf.FunctionAt(address - image.base);
    if (found.substr(0, prefix.size()) != prefix) {
      *error = what + " points at \"" + std::string(found) + "\", not at " + slot.function;
      return false;
    }
  }
  return true;
}

// cudaGetDevice of the runtime linked into the library (see the header): left alone when a
// driver answers, else answered with device 0 in this process's copy. Returns what was done.
bool AnswerCudaGetDevice(const ElfFile& elf, const LoadedImage& image, std::string* done,
                         std::string* error) {
  // movl $0, (%rdi); xorl %eax, %eax; ret
  static constexpr uint8_t kDeviceZero[] = {0xc7, 0x07, 0, 0, 0, 0, 0x31, 0xc0, 0xc3};
  constexpr int kStubLibrary = 34, kInsufficientDriver = 35, kNoDevice = 100;
  const std::optional<Symbol> symbol = elf.Find("cudaGetDevice", STT_FUNC);
  const uintptr_t address = symbol ? image.base + symbol->value : 0;
  if (!symbol || symbol->size < sizeof(kDeviceZero) ||
      (image.FlagsOf(address, symbol->size) & PF_X) == 0) {
    *error = "no cudaGetDevice function in the executable segment of " + image.path;
    return false;
  }
  using GetDevice = int (*)(int*);
  auto get_device = reinterpret_cast<GetDevice>(address);
  int device = -1;
  const int status = get_device(&device);
  if (status == 0) {
    *done = "cudaGetDevice answered by the CUDA driver (device " + std::to_string(device) +
            "), library unmodified";
    return true;
  }
  if (status != kStubLibrary && status != kInsufficientDriver && status != kNoDevice) {
    *error = "cudaGetDevice of " + image.path + " failed with CUDA error " +
             std::to_string(status) + ", not one that means \"no CUDA driver\" (34, 35, 100)";
    return false;
  }
  const long page = sysconf(_SC_PAGESIZE);
  const uintptr_t first = address & ~static_cast<uintptr_t>(page - 1);
  const size_t length = address + sizeof(kDeviceZero) - first;
  void* pages = reinterpret_cast<void*>(first);
  if (mprotect(pages, length, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) {
    *error = ErrnoText("no CUDA driver (cudaGetDevice: CUDA error " + std::to_string(status) +
                       ") and cannot make cudaGetDevice writable to answer device 0");
    return false;
  }
  memcpy(reinterpret_cast<void*>(address), kDeviceZero, sizeof(kDeviceZero));
  __builtin___clear_cache(reinterpret_cast<char*>(address),
                          reinterpret_cast<char*>(address + sizeof(kDeviceZero)));
  if (mprotect(pages, length, PROT_READ | PROT_EXEC) != 0) {
    *error = ErrnoText("cannot make cudaGetDevice read-only again");
    return false;
  }
  device = -1;
  if (get_device(&device) != 0 || device != 0) {
    *error = "cudaGetDevice still fails after it was answered with device 0";
    return false;
  }
  *done = "no CUDA driver (cudaGetDevice: CUDA error " + std::to_string(status) +
          "): cudaGetDevice answers device 0 in this process (thread names only); the "
          "transport's code is unmodified";
  return true;
}

}  // namespace

std::unique_ptr<InstalledNcclSocket> InstalledNcclSocket::Open(const std::string& path,
                                                               std::string* error) {
  std::unique_ptr<InstalledNcclSocket> loaded(new InstalledNcclSocket());
  loaded->handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (loaded->handle_ == nullptr) {
    const char* why = dlerror();
    *error = "cannot load " + path + ": " + (why != nullptr ? why : "dlopen failed");
    return nullptr;
  }
  int version = 0;
  LoadedImage image;
  ElfFile elf;
  if (!CheckVersion(loaded->handle_, path, &version, error) ||
      !Locate(loaded->handle_, &image, error) || !elf.Open(image.path, error)) {
    return nullptr;
  }
  if (elf.Notes().empty() || elf.Notes() != image.notes) {
    *error = image.path + " on disk is not the library that was loaded (build-id notes differ)";
    return nullptr;
  }
  const std::optional<Symbol> symbol = elf.Find("ncclNetSocket", STT_OBJECT);
  if (!symbol || symbol->size != sizeof(abi::NetV11)) {
    *error = image.path + " has no " + std::to_string(sizeof(abi::NetV11)) +
             "-byte ncclNetSocket object in its symbol table (NCCL 2.28.9's ncclNet_v11 table)";
    return nullptr;
  }
  const auto* table = reinterpret_cast<const abi::NetV11*>(image.base + symbol->value);
  std::string cuda;
  if (!CheckTable(elf, image, table, error) || !AnswerCudaGetDevice(elf, image, &cuda, error)) {
    return nullptr;
  }
  loaded->table_ = table;
  loaded->description_ = "NCCL " + std::to_string(version) + " socket transport from " +
                         image.path + " (ncclNetSocket at load address + " + Hex(symbol->value) +
                         "); " + cuda;
  return loaded;
}

InstalledNcclSocket::~InstalledNcclSocket() {
  if (handle_ != nullptr) dlclose(handle_);
}

}  // namespace devmem::perf
