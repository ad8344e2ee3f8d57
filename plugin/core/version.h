// The project's version: CMake's project(VERSION) is its one owner (CMakeLists.txt passes it
// as DEVMEM_VERSION); the init log line and `devmem-doctor --version` show it.
#pragma once

namespace devmem {

#ifndef DEVMEM_VERSION
#error "DEVMEM_VERSION comes from CMakeLists.txt's project(VERSION)"
#endif
inline constexpr const char* kVersion = DEVMEM_VERSION;

}  // namespace devmem
