#!/usr/bin/env bash
# Packs what a GPU host needs into .carry/ (git-ignored) so the `device` machine, which has no
# package registry, can run the GPU tests, the benchmarks and tests/gpu/gpu_verify.sh:
#   .carry/lib    the plugin and every shared library the carried binaries load that is not
#                 part of the base system (found with ldd: libnl-*.so.200,
#                 libbenchmark.so.1debian, a shared gtest if the build used one, ...)
#   .carry/bin    the binaries of BUILD_DIR/bin
#   .carry/tests  the GPU test executables (devmem_gpu_*)
#   .carry/tests/gpu/   gpu_verify.sh with its python helpers, torch_allreduce.py and
#                 torch_collectives.py
#   .carry/perf/scripts/, .carry/perf/lib/
#                 the scripts and their python library, at the same places as in the
#                 repository (the same versions as the binaries): `.carry/tests/gpu/gpu_verify.sh
#                 .carry` runs from the bundle alone; the compare scripts take BUILD=.carry,
#                 PLUGIN=.carry/lib/libnccl-net-devmem.so and LIBNCCL=the host's libnccl.so.2
#                 when it keeps its symbol table
#   .carry/MANIFEST.txt  commit, build dir, files, where each carried library came from
#
#   tests/gpu/gpu_host_bundle.sh [BUILD_DIR]     (default: build; run from the repository root)
#
# Not carried on purpose: the base libraries every Linux host has (glibc, libstdc++, libgcc_s,
# libm, libdl, libpthread, librt, ld-linux), NCCL (the host's pip nvidia-nccl-cu13 must be the
# one used, like torch uses it; it is also larger than the carry limit) and the driver's
# libraries (libcuda, libnvidia-*: they must match the host's kernel driver).
set -uo pipefail

die() {
  echo "gpu_host_bundle.sh: $*" >&2
  exit 1
}

build=${1:-build}
out=.carry
carry_limit_mib=64  # the device tool carries at most 64 MiB in all
[[ -d "$build" ]] || die "no build directory $build (cmake -S . -B $build && cmake --build $build)"
[[ -f "$build/libnccl-net-devmem.so" ]] || die "$build/libnccl-net-devmem.so not built"
[[ -f tests/gpu/gpu_verify.sh ]] ||
  die "run from the repository root (tests/gpu/gpu_verify.sh not found)"

rm -rf "$out"
mkdir -p "$out/lib" "$out/bin" "$out/tests/gpu" "$out/perf/scripts" "$out/perf/lib" ||
  die "cannot create $out"

elves=()  # every ELF file carried, for the ldd pass below
carry() {  # carry FILE DIR: copy, remember ELF files
  cp -L "$1" "$2/" || die "cannot copy $1"
  if [[ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" == '177ELF' ]]; then
    elves+=("$2/$(basename "$1")")
  fi
}

carry "$build/libnccl-net-devmem.so" "$out/lib"
for f in "$build"/bin/*; do
  [[ -f "$f" && -x "$f" ]] && carry "$f" "$out/bin"
done
# The test executables only (each in its layer's folder, tests/<layer>/): gtest_discover_tests
# leaves *.cmake files beside them.
gpu_tests=0
while IFS= read -r f; do
  [[ -f "$f" && -x "$f" && "$f" != *.cmake ]] || continue
  carry "$f" "$out/tests"
  gpu_tests=$((gpu_tests + 1))
done < <(find "$build/tests" -name 'devmem_gpu_*' -type f | sort)
((gpu_tests > 0)) || echo "gpu_host_bundle.sh: warning: no devmem_gpu_* test executables in $build/tests" >&2
[[ -x "$out/bin/devmem-nccl-bench" ]] ||
  echo "gpu_host_bundle.sh: warning: devmem-nccl-bench not built (NCCL headers or nvcc missing?)" >&2
# Scripts at their repository paths, so that their relative paths (../lib, ../../perf) hold.
for f in tests/gpu/gpu_verify.sh tests/gpu/gpu_verify_steps.py tests/gpu/gpu_verify_env.py \
  tests/gpu/torch_allreduce.py tests/gpu/torch_collectives.py perf/scripts/*.sh perf/lib/*.py; do
  cp "$f" "$out/$f" || die "cannot copy $f"
  chmod +x "$out/$f"
done

# Shared libraries: everything ldd resolves for a carried ELF, less the base system, NCCL and
# the driver. ldd lists the whole closure, so libraries of libraries are covered too.
is_base_or_host_lib() {
  case "$1" in
    linux-vdso.so.*|ld-linux*.so.*|libc.so.*|libstdc++.so.*|libgcc_s.so.*|libm.so.*|\
    libdl.so.*|libpthread.so.*|librt.so.*) return 0 ;;  # base system
    libnccl.so*|libnccl-net*.so*) return 0 ;;               # the host's pip NCCL / our plugin
    libcuda.so*|libnvidia-*.so*|libnvcuvid.so*) return 0 ;; # the host's driver
  esac
  return 1
}
declare -A carried_from=()
for elf in "${elves[@]}"; do
  deps=$(ldd "$elf" 2>&1) || die "ldd $elf failed: $deps"
  if grep -q "not found" <<<"$deps"; then
    die "$elf needs libraries this machine lacks: $(grep 'not found' <<<"$deps" | tr -s ' \t' ' ')"
  fi
  # Lines look like "libfoo.so.1 => /path/libfoo.so.1 (0x...)"; the soname on the left is the
  # name the loader searches for, so that is the name the copy gets.
  while read -r soname arrow path _; do
    [[ "$arrow" == "=>" && "$path" == /* ]] || continue
    is_base_or_host_lib "$soname" && continue
    [[ -n "${carried_from[$soname]:-}" ]] && continue
    cp -L "$path" "$out/lib/$soname" || die "cannot copy $path"
    carried_from[$soname]=$path
  done <<<"$deps"
done

# Debug info only (symbols stay for backtraces); keeps the bundle under the carry limit.
for f in "$out"/bin/* "$out"/tests/* "$out"/lib/*; do
  [[ -f "$f" && "$(head -c 4 "$f" | od -An -c | tr -d ' ')" == '177ELF' ]] || continue
  chmod u+w "$f"
  strip --strip-debug "$f" 2>/dev/null || echo "gpu_host_bundle.sh: warning: cannot strip $f" >&2
done

{
  echo "# nccl-net-devmem GPU host bundle"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "build dir: $(realpath "$build")"
  echo "built on: $(uname -r), $(ldd --version 2>&1 | head -n 1)"
  # The newest glibc symbol version any carried file needs: the host's glibc must be at least it.
  echo "needs glibc >= $(for f in "${elves[@]}"; do objdump -T "$f" 2>/dev/null; done |
    grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 | sed 's/GLIBC_//')"
  echo "carried libraries:"
  for soname in $(printf '%s\n' "${!carried_from[@]}" | sort); do
    echo "  $soname <- ${carried_from[$soname]}"
  done
  echo "files:"
  (cd "$out" && find . -type f ! -name MANIFEST.txt | sort | xargs ls -l | awk '{print "  " $5 "\t" $9}')
} >"$out/MANIFEST.txt"

size_kib=$(du -sk "$out" | cut -f1)
libs="${!carried_from[*]}"
echo "bundle $out: $((size_kib / 1024)) MiB, $gpu_tests GPU test executable(s), libraries carried:" \
     "${libs:-none} (see $out/MANIFEST.txt)"
if ((size_kib > carry_limit_mib * 1024)); then
  die "$out is $((size_kib / 1024)) MiB, over the device carry limit of $carry_limit_mib MiB"
fi
