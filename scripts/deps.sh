#!/usr/bin/env bash
# Installs what outboxd needs to build, test and run its local stack (Debian 12), and resolves
# the Kafka jars into ~/.m2. Installs only what is missing; quiet when there is nothing to do.
#
#   scripts/deps.sh
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)

PACKAGES=(
    build-essential cmake ninja-build pkg-config
    libpq-dev librdkafka-dev libprotobuf-dev protobuf-compiler libabsl-dev libfmt-dev
    libtomlplusplus-dev nlohmann-json3-dev libgtest-dev libgmock-dev
    postgresql-15 postgresql-client-15
    openjdk-17-jre-headless maven
    python3 curl
    unzip xz-utils  # stack.sh: PostgreSQL 14, 16-18 jars hold a .txz; registry.sh: the app's properties
    openssl  # tests/integration/tls_stack.sh: test certificates (keytool comes with the JRE)
    libcpp-httplib-dev prometheus python3-yaml
    python3-venv
    clang libclang-rt-14-dev
    file lintian debootstrap  # make deb (CPack's dpkg-shlibdeps), tests/deploy/deb_test.sh
)

say() { printf 'deps: %s\n' "$*" >&2; }

installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

SUDO=()
if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || { say "not root and no sudo: cannot install packages"; exit 1; }
    SUDO=(sudo)
fi

missing=()
for p in "${PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
done

installed_pg_now=0
if ((${#missing[@]} > 0)); then
    say "installing: ${missing[*]}"
    for p in "${missing[@]}"; do [[ $p == postgresql-15 ]] && installed_pg_now=1; done
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
    say "installed ${#missing[@]} package(s)"
fi

# The postgresql package creates a cluster "15/main" (port 5432) started by the system service.
# The project runs its own cluster (deploy/local/stack.sh), so keep Debian's from starting at
# boot. If we installed it just now, also stop it; a cluster that was already there belongs to
# the machine's owner and is left running.
main_conf=/etc/postgresql/15/main
main_data=/var/lib/postgresql/15/main
if [[ -f $main_conf/start.conf ]] && grep -qx 'auto' "$main_conf/start.conf"; then
    say "setting Debian's PostgreSQL cluster 15/main to start manually (we run our own)"
    "${SUDO[@]}" sed -i 's/^auto$/manual/' "$main_conf/start.conf"
fi
if ((installed_pg_now)) && [[ -f $main_data/postmaster.pid ]]; then
    say "stopping Debian's PostgreSQL cluster 15/main"
    (cd / && "${SUDO[@]}" runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl \
        -D "$main_data" -m fast -w -s stop) || true
fi

# Debian's prometheus package (installed for promtool) enables its server, which listens on
# every interface. If we installed it just now, keep it from running; a prometheus that was
# already there belongs to the machine's owner.
for p in "${missing[@]}"; do
    if [[ $p == prometheus ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        say "disabling Debian's prometheus service (only promtool is needed)"
        "${SUDO[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
done

# Kafka jars (Maven Central -> ~/.m2) and .run/kafka/classpath.txt; no-op when up to date.
"$REPO/deploy/local/stack.sh" classpath
# PostgreSQL 14, 16, 17 and 18 (official builds from Maven Central -> ~/.m2, unpacked under .run/)
# for the version matrix in scripts/test.sh; no-op when unpacked already.
for v in 14 16 17 18; do OUTBOXD_PG_VERSION=$v "$REPO/deploy/local/stack.sh" pgbin >/dev/null; done
# Kafka 3.9 jars for the SCRAM test when librdkafka < 2.6.1 (tests/integration/kafka3-pom.xml).
bash "$REPO/tests/integration/tls_stack.sh" classpath
