#!/usr/bin/env bash
# Builds the yardstick: NCCL's own socket transport (NCCL_NET=Socket) as an external network
# plugin exporting ncclNetPlugin_v11, compiled from an NCCL source tree the user names. No NCCL
# source lives in this repository; only the shim (nccl_core_shim.cc) that stands in for the
# pieces of NCCL's core the transport calls (logging, env lookup, a cudaGetDevice for thread
# names).
#
#   NCCL_SRC=/path/to/nccl perf/peers/nccl_socket/build.sh [OUT_DIR]
#
# NCCL_SRC: a checkout of NVIDIA/nccl; the shim is written against tag v2.28.9-1
#           (git clone --branch v2.28.9-1 https://github.com/NVIDIA/nccl).
# OUT_DIR:  where objects and libnccl-net-ncclsocket.so go (default build/peers/nccl_socket).
# CUDA_HOME: CUDA toolkit whose headers NCCL's headers include (default /usr/local/cuda;
#            headers only: nothing links against CUDA). CXX: the compiler (default g++).
#
# Compiled as NCCL compiles itself (src/Makefile, makefiles/common.mk: -O3 -g, C++17, hidden
# visibility, no net profiling), from src/transport/net_socket.cc, src/misc/socket.cc,
# src/misc/param.cc and src/misc/utils.cc; unused functions are dropped at link time
# (--gc-sections) and --no-undefined proves the shim covers everything that remains.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-build/peers/nccl_socket}
cxx=${CXX:-g++}
cuda=${CUDA_HOME:-/usr/local/cuda}

die() { echo "nccl_socket/build.sh: $*" >&2; exit 2; }
[[ -n "${NCCL_SRC:-}" ]] ||
  die "set NCCL_SRC to an NCCL source tree (git clone --branch v2.28.9-1 https://github.com/NVIDIA/nccl)"
src=$(cd "$NCCL_SRC" && pwd)/src
[[ -f "$src/transport/net_socket.cc" && -f "$src/nccl.h.in" && -f "$src/../makefiles/version.mk" ]] ||
  die "$NCCL_SRC is not an NCCL source tree (no src/transport/net_socket.cc, src/nccl.h.in, makefiles/version.mk)"
[[ -f "$cuda/include/cuda_runtime.h" ]] ||
  die "no $cuda/include/cuda_runtime.h: NCCL's headers include it; install the CUDA toolkit headers or set CUDA_HOME"

# nccl.h is generated from nccl.h.in with the version of makefiles/version.mk, as src/Makefile does.
version_of() { sed -n "s/^$1 *:= *\([0-9A-Za-z._-]*\).*/\1/p" "$src/../makefiles/version.mk"; }
major=$(version_of NCCL_MAJOR)
minor=$(version_of NCCL_MINOR)
patch=$(version_of NCCL_PATCH)
suffix=$(version_of NCCL_SUFFIX)
[[ -n "$major" && -n "$minor" && -n "$patch" ]] || die "cannot read the version from makefiles/version.mk"
if [[ "$major.$minor.$patch" != 2.28.9 ]]; then
  echo "nccl_socket/build.sh: warning: NCCL $major.$minor.$patch, the shim is written against 2.28.9;" \
       "a build or link error names what the shim must add" >&2
fi
mkdir -p "$out/include"
sed -e "s/\${nccl:Major}/$major/g" -e "s/\${nccl:Minor}/$minor/g" -e "s/\${nccl:Patch}/$patch/g" \
    -e "s/\${nccl:Suffix}/$suffix/g" \
    -e "s/\${nccl:Version}/$(printf '%d%02d%02d' "$major" "$minor" "$patch")/g" \
    "$src/nccl.h.in" >"$out/include/nccl.h"

cuda_version=$(sed -n 's/^#define CUDA_VERSION \([0-9]*\).*/\1/p' "$cuda/include/cuda.h")
[[ -n "$cuda_version" ]] || die "cannot read CUDA_VERSION from $cuda/include/cuda.h"
# CUDA 13 keeps libcu++ (<cuda/atomic>) under include/cccl; older toolkits under include/.
includes=(-I"$out/include" -I"$src" -I"$src/include" -I"$src/include/plugin"
          -I"$cuda/include" -I"$cuda/include/cccl")
flags=(-std=c++17 -O3 -g -fPIC -fvisibility=hidden -ffunction-sections -fdata-sections
       -DCUDA_MAJOR=$((cuda_version / 1000)) -DCUDA_MINOR=$((cuda_version % 1000 / 10))
       -Wall -Wno-unused-function -Wno-sign-compare -Wvla)

objects=()
for file in transport/net_socket.cc misc/socket.cc misc/param.cc misc/utils.cc; do
  object="$out/$(basename "$file" .cc).o"
  echo "  CXX  $src/$file"
  "$cxx" "${flags[@]}" "${includes[@]}" -c "$src/$file" -o "$object"
  objects+=("$object")
done
echo "  CXX  $here/nccl_core_shim.cc"
"$cxx" "${flags[@]}" -Wextra -Werror "${includes[@]}" -c "$here/nccl_core_shim.cc" \
  -o "$out/nccl_core_shim.o"
objects+=("$out/nccl_core_shim.o")

plugin="$out/libnccl-net-ncclsocket.so"
"$cxx" -shared -o "$plugin" "${objects[@]}" -Wl,--gc-sections -Wl,--no-undefined \
  -Wl,--version-script="$here/exports.map" -pthread
echo "built $plugin (NCCL $major.$minor.$patch socket transport, exports ncclNetPlugin_v11)"
