# Sourced, not run: makes a Debian root file system with debootstrap from Debian's own mirror,
# once, and remakes it only when what was asked for changes. Used by scripts/portability.sh
# (Debian 13 with the build dependencies), tests/deploy/deb_test.sh (a clean Debian 12 to install
# the package in) and scripts/image.sh (the minbase tree that becomes the image's base).
#
#   . scripts/debootstrap.sh
#   debootstrap_root SUITE ROOT [PACKAGE...]     # debootstrap --variant=minbase SUITE into ROOT
#
# The .deb files stay in .run/SUITE-debs, so remaking a root downloads nothing again. A stamp
# file ROOT/.outboxd-packages records the packages asked for; the root is remade when they
# change. Needs root; installs debootstrap on the host when missing. DEBIAN_MIRROR overrides the
# mirror. Refuses to remove a root that has something mounted under it.

debootstrap_root() {
    local suite=$1 root=$2
    shift 2
    local wanted="$*"
    local repo
    repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
    local mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
    if [[ -f $root/.outboxd-packages && $(<"$root/.outboxd-packages") == "$wanted" ]]; then
        return 0
    fi
    [[ $EUID -eq 0 ]] || { echo "debootstrap: needs root" >&2; return 1; }
    command -v debootstrap >/dev/null || {
        echo "debootstrap: installing debootstrap" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    }
    # Never rm -rf through a mount (portability.sh bind-mounts the repository in there).
    if awk -v r="$root/" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        echo "debootstrap: something under $root is still mounted (an interrupted run?); umount it first" >&2
        return 1
    fi
    rm -rf --one-file-system "$root"
    mkdir -p "$(dirname "$root")" "$repo/.run/$suite-debs"
    local log="$repo/.run/$(basename "$root")-debootstrap.log"
    local include=()
    (($# > 0)) && include=(--include="$(IFS=,; echo "$*")")
    echo "debootstrap: $suite into $root from $mirror (a few minutes the first time)" >&2
    if ! debootstrap --variant=minbase "${include[@]}" --cache-dir="$repo/.run/$suite-debs" \
            "$suite" "$root" "$mirror" >"$log" 2>&1; then
        tail -20 "$log" >&2
        echo "debootstrap: failed (log: $log)" >&2
        return 1
    fi
    printf '%s' "$wanted" >"$root/.outboxd-packages"
}
