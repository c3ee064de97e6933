#!/usr/bin/env bash
# What make bench needs beyond scripts/deps.sh (Debian 12): gnuplot for the PNG plots, and
# pgbench / pg_recvlogical (postgresql-client-15, already in scripts/deps.sh). Debezium's jars
# come from Maven Central through bench/debezium/pom.xml (bench/bench.sh resolves them).
set -euo pipefail
repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
bash "$repo/scripts/deps.sh"
extra=(gnuplot-nox time)
missing=()
for p in "${extra[@]}"; do
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  printf 'bench: installing %s\n' "${missing[*]}" >&2
  SUDO=(); [[ $EUID -eq 0 ]] || SUDO=(sudo)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
fi
for tool in pgbench pg_recvlogical gnuplot /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found after installing" >&2; exit 1; }
done
