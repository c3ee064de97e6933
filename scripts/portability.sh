#!/usr/bin/env bash
# make portability: builds outboxd and its unit tests on Debian 13 (trixie), the next Debian
# release (librdkafka 2.8+, libpq 17, gcc 14), in a chroot made with debootstrap from Debian's
# own packages, and runs the unit tests there. Not part of `make test`.
#
#   scripts/portability.sh              build + unit tests in the chroot
#   scripts/portability.sh shell CMD... run CMD inside the chroot (same paths as outside),
#                                       e.g. a tls_test of the trixie build (docs/configuration.md)
#
# The chroot lives in .run/trixie (about 1 GB) and is made once; it is remade when the package
# list below changes. The repository is bind-mounted at its own path inside it, so the build
# tree (build-trixie/) and every path a test reads are the same inside and outside. Needs root
# (debootstrap, chroot, mount); installs debootstrap on the host when missing.
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
ROOT=${OUTBOXD_TRIXIE_ROOT:-$REPO/.run/trixie}
BUILD=${OUTBOXD_TRIXIE_BUILD:-$REPO/build-trixie}
JOBS=${JOBS:-2}

# What scripts/deps.sh installs for building and unit-testing, by trixie's names.
PACKAGES=(
    build-essential cmake ninja-build pkg-config ccache ca-certificates
    libpq-dev librdkafka-dev libprotobuf-dev protobuf-compiler libabsl-dev libfmt-dev
    libtomlplusplus-dev nlohmann-json3-dev libgtest-dev libgmock-dev libcpp-httplib-dev
)

say() { printf 'portability: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[[ $EUID -eq 0 ]] || die "needs root (debootstrap, chroot, mount): run it as root"

mounted() { mountpoint -q "$1"; }
MOUNTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" || true; done
}
trap cleanup EXIT

# The chroot itself: scripts/debootstrap.sh (shared with the package test and the image's base).
. "$REPO/scripts/debootstrap.sh"
make_chroot() {
    debootstrap_root trixie "$ROOT" "${PACKAGES[@]}" || die "cannot make the trixie chroot"
}

enter() {
    mkdir -p "$ROOT/proc" "$ROOT/dev" "$ROOT$REPO"
    mounted "$ROOT/proc" || { mount -t proc proc "$ROOT/proc"; MOUNTS+=("$ROOT/proc"); }
    mounted "$ROOT/dev" || { mount --bind /dev "$ROOT/dev"; MOUNTS+=("$ROOT/dev"); }
    mounted "$ROOT$REPO" || { mount --bind "$REPO" "$ROOT$REPO"; MOUNTS+=("$ROOT$REPO"); }
}

in_chroot() {
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 CCACHE_DIR=/root/.ccache TZ=UTC "$@"
}

make_chroot
enter

if [[ ${1:-} == shell ]]; then
    shift
    # tests/integration/tls_stack.sh, run as root, keeps PostgreSQL's socket under /var/tmp.
    mkdir -p "$ROOT/var/tmp"
    mounted "$ROOT/var/tmp" || { mount --bind /var/tmp "$ROOT/var/tmp"; MOUNTS+=("$ROOT/var/tmp"); }
    in_chroot "$@"
    exit
fi

in_chroot sh -c '. /etc/os-release; echo "$PRETTY_NAME"; dpkg-query -W -f="\${Package} \${Version}\n" \
    g++ cmake librdkafka-dev libpq-dev libabsl-dev libprotobuf-dev libfmt-dev libgtest-dev libcpp-httplib-dev' >&2

# Only outboxd and the unit-test binaries (the integration tests need the stack, which runs
# outside): names from outboxd_test(...) in tests/unit.
mapfile -t targets < <(grep -rhoE '^outboxd_test\([A-Za-z0-9_]+' "$REPO"/tests/unit --include=CMakeLists.txt \
    | sed 's/^outboxd_test(//' | sort -u)
say "building outboxd and ${#targets[@]} unit-test binaries in $BUILD (gcc of trixie, -O1)"
# -O1 without debug info: this checks that the code builds and behaves on trixie, and the
# machine is shared; a release build is the Dockerfile's job.
in_chroot cmake -S "$REPO" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -DNDEBUG" -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
in_chroot cmake --build "$BUILD" -j "$JOBS" --target outboxd "${targets[@]}"
in_chroot "$BUILD/outboxd" --version
# deploy_files checks deploy/ with promtool and systemd, not the code: it runs outside.
in_chroot ctest --test-dir "$BUILD" -L unit -E '^deploy_files$' -j "$JOBS" --output-on-failure
say "trixie: outboxd and its unit tests pass"
