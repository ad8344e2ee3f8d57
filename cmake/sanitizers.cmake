# Sanitizer and fuzzer builds (README.md, "Tests").
#
#   DEVMEM_SANITIZE=address,undefined   ASan + UBSan (GCC or Clang); UBSan findings are fatal
#   DEVMEM_SANITIZE=thread              TSan
#   DEVMEM_FUZZ=ON                      Clang only: libFuzzer coverage on every target of ours and
#                                       the harnesses of tests/fuzz (implies address,undefined)
#
# The flags go to every C/C++ target of the project (never to nvcc's CUDA sources). The
# sanitizer runtime is linked into executables only: the plugin .so, dlopened by the tests the
# way NCCL loads it, resolves the runtime from the executable that loads it instead of carrying
# a second copy, so it is linked without --no-undefined in these builds (DEVMEM_SO_NO_UNDEFINED).
set(DEVMEM_SANITIZE "" CACHE STRING
    "Sanitizers for the project's targets: address,undefined | thread | empty for none")
option(DEVMEM_FUZZ "Build the libFuzzer harnesses of tests/fuzz (needs Clang)" OFF)

set(DEVMEM_SO_NO_UNDEFINED -Wl,--no-undefined)
set(DEVMEM_SANITIZE_COMPILE_FLAGS "")
set(DEVMEM_SANITIZE_LINK_FLAGS "")

if(DEVMEM_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "DEVMEM_FUZZ=ON needs Clang's libFuzzer: configure with "
                        "-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++")
  endif()
  if(DEVMEM_SANITIZE STREQUAL "")
    set(DEVMEM_SANITIZE "address,undefined")
  endif()
endif()

if(NOT DEVMEM_SANITIZE STREQUAL "")
  string(REPLACE "," ";" _devmem_sanitizers "${DEVMEM_SANITIZE}")
  foreach(_sanitizer IN LISTS _devmem_sanitizers)
    if(NOT _sanitizer MATCHES "^(address|undefined|thread|leak)$")
      message(FATAL_ERROR "DEVMEM_SANITIZE: unknown sanitizer '${_sanitizer}' "
                          "(accepted: address, undefined, leak, thread)")
    endif()
    list(APPEND DEVMEM_SANITIZE_COMPILE_FLAGS -fsanitize=${_sanitizer})
  endforeach()
  if("thread" IN_LIST _devmem_sanitizers AND "address" IN_LIST _devmem_sanitizers)
    message(FATAL_ERROR "DEVMEM_SANITIZE: thread and address cannot share a build")
  endif()
  if(DEVMEM_FUZZ AND "thread" IN_LIST _devmem_sanitizers)
    message(FATAL_ERROR "DEVMEM_FUZZ=ON runs under address,undefined, not thread")
  endif()
  list(APPEND DEVMEM_SANITIZE_COMPILE_FLAGS -fno-omit-frame-pointer)
  if("undefined" IN_LIST _devmem_sanitizers)
    # A UBSan report aborts the test like an ASan one does, whatever UBSAN_OPTIONS says.
    list(APPEND DEVMEM_SANITIZE_COMPILE_FLAGS -fno-sanitize-recover=undefined)
  endif()
  set(DEVMEM_SANITIZE_LINK_FLAGS ${DEVMEM_SANITIZE_COMPILE_FLAGS})
  if(DEVMEM_FUZZ)
    # Coverage for libFuzzer everywhere; the harnesses add -fsanitize=fuzzer (its main) at link.
    list(APPEND DEVMEM_SANITIZE_COMPILE_FLAGS -fsanitize=fuzzer-no-link)
  endif()
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${DEVMEM_SANITIZE_COMPILE_FLAGS}>")
  add_link_options(
    "$<$<STREQUAL:$<TARGET_PROPERTY:TYPE>,EXECUTABLE>:${DEVMEM_SANITIZE_LINK_FLAGS}>")
  set(DEVMEM_SO_NO_UNDEFINED "")
  if(DEVMEM_FUZZ)
    message(STATUS "nccl-net-devmem: sanitizers ${DEVMEM_SANITIZE}, libFuzzer harnesses")
  else()
    message(STATUS "nccl-net-devmem: sanitizers ${DEVMEM_SANITIZE}")
  endif()
endif()
