#!/usr/bin/env bash
# make image: builds the container image of deploy/Dockerfile, unchanged, with buildah (Debian 12's
# package; daemonless, no Docker engine), as root, with the vfs storage driver and chroot
# isolation, into a storage of the project's own (.run/containers).
#
# No registry can be pulled from here, so the base image the Dockerfile names, debian:trixie-slim,
# is made first: a debootstrap --variant=minbase of Debian 13 (scripts/debootstrap.sh, the tree in
# .run/trixie-slim) copied into an empty image and committed as docker.io/library/debian:trixie-slim,
# trimmed the way Debian's own slim images are (no documentation, man pages or locales installed
# by later packages). `buildah bud --pull=never` then builds the Dockerfile FROM that tag; its RUN
# steps reach Debian's mirror. Someone with Docker builds the same Dockerfile against the real base.
#
#   scripts/image.sh              base image (when missing), then outboxd:<version>
#   scripts/image.sh base         the base image only
#   scripts/image.sh buildah ARGS buildah with the project's storage options, e.g. `images`
#
# Prints the build's duration and the image's size. Needs root.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
base_root=$repo/.run/trixie-slim
base_tag=docker.io/library/debian:trixie-slim
version=$(sed -n 's/^project(outboxd VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
image=localhost/outboxd:$version
BUILDAH=(buildah --storage-driver vfs --root "$repo/.run/containers/storage"
         --runroot "$repo/.run/containers/runroot")

say() { printf 'image: %s\n' "$*" >&2; }
[[ $EUID -eq 0 ]] || { say "needs root (buildah with chroot isolation, debootstrap)"; exit 1; }
command -v buildah >/dev/null || {
    say "installing buildah"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >/dev/null
}

make_base() {
    . "$repo/scripts/debootstrap.sh"
    debootstrap_root trixie "$base_root"
    # Remade when the debootstrap tree or this function changed.
    local stamp
    stamp=$(stat -c %Y "$base_root/.outboxd-packages")-$(declare -f make_base | sha256sum | cut -c1-12)
    if [[ $("${BUILDAH[@]}" inspect --type image --format '{{index .ImageAnnotations "org.outboxd.base-stamp"}}' \
              "$base_tag" 2>/dev/null) == "$stamp" ]]; then
        return 0
    fi
    say "making $base_tag from the debootstrap tree $base_root"
    local ctr mnt
    ctr=$("${BUILDAH[@]}" from scratch)
    mnt=$("${BUILDAH[@]}" mount "$ctr")
    cp -a "$base_root/." "$mnt/"
    rm -f "$mnt/.outboxd-packages"
    # As Debian's own images: apt keeps no .deb files, package lists or caches after a command
    # (so a Dockerfile's apt-get install leaves nothing behind, as with the real base), and, as
    # its slim variant, later packages install no documentation, man pages or translations.
    cat >"$mnt/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
    printf 'Acquire::Languages "none";\n' >"$mnt/etc/apt/apt.conf.d/docker-no-languages"
    cat >"$mnt/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
CFG
    rm -rf "$mnt"/var/lib/apt/lists/* "$mnt"/var/cache/apt/*.bin "$mnt"/var/cache/apt/archives/*.deb \
        "$mnt"/usr/share/man/* "$mnt"/usr/share/info/* "$mnt"/usr/share/groff/* "$mnt"/usr/share/locale/*
    find "$mnt/usr/share/doc" -type f ! -name copyright -delete
    find "$mnt/usr/share/doc" -depth -type d -empty -delete
    : >"$mnt/etc/resolv.conf"
    "${BUILDAH[@]}" umount "$ctr" >/dev/null
    "${BUILDAH[@]}" config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --annotation "org.outboxd.base-stamp=$stamp" "$ctr"
    "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$base_tag" >/dev/null
    say "$base_tag: $("${BUILDAH[@]}" images --format '{{.Size}}' "$base_tag")"
}

if [[ ${1:-} == buildah ]]; then
    shift
    exec "${BUILDAH[@]}" "$@"
fi
t0=$(date +%s)
make_base
[[ ${1:-} == base ]] && exit 0
t1=$(date +%s)
say "buildah bud --isolation chroot --pull=never -f deploy/Dockerfile -t $image ."
"${BUILDAH[@]}" bud --isolation chroot --pull=never --layers=false -f deploy/Dockerfile -t "$image" .
t2=$(date +%s)
"${BUILDAH[@]}" tag "$image" localhost/outboxd:latest
size=$("${BUILDAH[@]}" images --format '{{.Size}}' "$image" | awk 'NR == 1')
say "base image $(( t1 - t0 )) s, build $(( t2 - t1 )) s; $image: $size"
