#!/usr/bin/env bash
# Packs what a GPU host needs into .carry/ (git-ignored) so the `device` machine can run the
# gpu tests and benchmarks without a package registry: the plugin, the binaries, the GPU test
# executables, and the libnl shared libraries they load.
#
#   perf/gpu_host_bundle.sh [BUILD_DIR]        (default: build)
set -euo pipefail
build=${1:-build}
out=.carry
rm -rf "$out"
mkdir -p "$out/lib" "$out/bin" "$out/tests"
cp "$build/libnccl-net-devmem.so" "$out/lib/"
cp "$build"/bin/* "$out/bin/"
cp "$build"/tests/devmem_gpu_* "$out/tests/"
cp perf/nccl_compare.sh perf/plot_busbw.py perf/torch_allreduce.py "$out/bin/"
for lib in libnl-3.so.200 libnl-genl-3.so.200 libnl-route-3.so.200; do
  cp -L "/usr/lib/x86_64-linux-gnu/$lib" "$out/lib/"
done
strip --strip-debug "$out"/bin/* "$out"/tests/* "$out"/lib/*.so* 2>/dev/null || true
du -sh "$out"
