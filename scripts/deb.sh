#!/usr/bin/env bash
# make deb: builds the Debian package outboxd_<version>_amd64.deb (and outboxd-dbgsym_..._amd64.ddeb)
# with CPack from the install() rules (cmake/Install.cmake, cmake/Package.cmake) in a build tree
# of its own, configured for /usr (the package's prefix) without the tests. Prints the path of the
# .deb on its last line. For the Debian release it runs on: the dependencies are those of this
# machine's libraries (dpkg-shlibdeps).
#
#   scripts/deb.sh [BUILD_DIR]     default build-deb
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build-deb}
jobs=${JOBS:-2}
cd "$repo"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
    -DOUTBOXD_BUILD_TESTS=OFF "${launcher[@]}" >/dev/null
cmake --build "$build" -j "$jobs" --target outboxd outboxd-tail
rm -f "$build"/outboxd_*.deb "$build"/outboxd-dbgsym_*.ddeb
(cd "$build" && cpack -G DEB) >"$build/cpack.log" 2>&1 || { cat "$build/cpack.log" >&2; exit 1; }
deb=$(ls "$build"/outboxd_*_*.deb)
dpkg-deb -f "$deb" Package Version Architecture Depends >&2
echo "$repo/$deb"
