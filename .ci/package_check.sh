#!/usr/bin/env bash
# The Debian package as a user gets it (docs/install.md "Debian package"): build it with cpack
# from a build tree, install it with dpkg -i, check that dlopen finds the plugin by the name
# NCCL_NET_PLUGIN=devmem makes NCCL ask for (NCCL v2.28.9-1 src/plugin/plugin_open.cc:91 tries
# "libnccl-net-<name>.so") and that it exports the v11 table, that devmem-doctor runs from PATH
# and reports (exit 0 ready or 1 not ready, not 2), then purge the package and check it is gone.
# Needs root and dpkg-dev (dpkg-shlibdeps). Usage: .ci/package_check.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: package_check.sh BUILD_DIR}
package=libnccl-net-devmem

(cd "$build" && cpack -G DEB >/dev/null)
deb=$(ls "$build"/${package}_*.deb)
echo "built $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'
dpkg-deb --contents "$deb" | awk '{print $6}'

installed() { dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q ' installed$'; }
if installed; then
  echo "$package is already installed on this machine: not touching it" >&2
  exit 1
fi
cleanup() { dpkg --purge "$package" >/dev/null 2>&1 || true; }
trap cleanup EXIT
dpkg -i "$deb"

python3 - <<'PY'
import ctypes
lib = ctypes.CDLL("libnccl-net-devmem.so")  # dlopen by name, as NCCL does
for table in ("ncclNetPlugin_v11", "ncclNetPlugin_v12"):
    getattr(lib, table)  # AttributeError if the symbol is missing
print("dlopen(\"libnccl-net-devmem.so\") found the installed plugin and its tables")
PY

set +e
doctor=$(command -v devmem-doctor)
"$doctor" --json >/tmp/doctor.json
status=$?
set -e
echo "devmem-doctor from PATH ($doctor) exited $status"
python3 -c 'import json,sys; r=json.load(open("/tmp/doctor.json")); print("ready:", r["ready"])'
if [[ $status -ne 0 && $status -ne 1 ]]; then
  echo "devmem-doctor failed to run its checks (exit $status)" >&2
  exit 1
fi

dpkg --purge "$package"
trap - EXIT
if installed || [[ -e /usr/lib/libnccl-net-devmem.so || -n $(command -v devmem-doctor || true) ]]; then
  echo "files left after dpkg -r" >&2
  exit 1
fi
echo "package installed, loaded, run and removed"
