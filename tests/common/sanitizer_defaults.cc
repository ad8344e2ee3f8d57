// Default sanitizer options of every test executable in a sanitizer build (DEVMEM_SANITIZE):
// any report fails the test at once, with a symbolized stack. ASAN_OPTIONS, UBSAN_OPTIONS and
// TSAN_OPTIONS still override them. Compiled only into sanitizer builds (tests/CMakeLists.txt).

#define DEVMEM_SANITIZER_DEFAULTS(name, value)                                \
  extern "C" __attribute__((visibility("default"), used)) const char* name(); \
  extern "C" const char* name() { return value; }

DEVMEM_SANITIZER_DEFAULTS(__asan_default_options,
                          "halt_on_error=1:detect_leaks=1:check_initialization_order=1")
DEVMEM_SANITIZER_DEFAULTS(__ubsan_default_options, "halt_on_error=1:print_stacktrace=1")
DEVMEM_SANITIZER_DEFAULTS(__tsan_default_options, "halt_on_error=1:second_deadlock_stack=1")
