#!/usr/bin/env bash
# The Debian package, installed the way an operator installs it, in a clean Debian 12 chroot:
#
#   1. lintian on the .deb: any finding that is not overridden (with its reason, in
#      deploy/debian/lintian-overrides) fails;
#   2. `apt-get install ./outboxd_<version>_amd64.deb` in a fresh copy (overlay) of a debootstrap
#      of Debian 12 with systemd, so that its dependencies resolve from Debian's mirror;
#   3. what the package promises: the system user, /var/lib/outboxd owned by it, the conffiles,
#      `outboxd --version` = CMake's project version, the unit installed but neither enabled nor
#      started, `systemd-analyze verify` of the installed unit, ldd resolving every library;
#   4. the operator's steps: the installed SQL applied, /etc/outboxd/outboxd.toml and outboxd.env
#      edited for the local stack, then the unit's ExecStart run as the unit's User with its
#      EnvironmentFile, until an event committed in PostgreSQL arrives on its topic (read by the
#      installed outboxd-tail); /healthz answers; SIGTERM stops it with exit 0 and a state file;
#   5. `apt-get purge outboxd` removes every file of the package and /etc/outboxd, and keeps the
#      state directory (and the system user that owns it).
#
#   tests/deploy/deb_test.sh DEB          (as root; make deb-test builds DEB first)
#   tests/deploy/deb_test.sh --prepare    only what needs no package or stack: lintian installed,
#                                         the Debian 12 base made (make test, in the background)
#
# Uses the local stack on OUTBOXD_PG_PORT / OUTBOXD_KAFKA_PORT and starts it (and stops it
# after) when it is not running. The chroot's base lives in .run/bookworm (made once by
# scripts/debootstrap.sh, ~1 min); each run gets an overlay of it, removed at the end.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
deb=${1:?usage: deb_test.sh path/to/outboxd_VERSION_amd64.deb | --prepare}
pg_port=${OUTBOXD_PG_PORT:-54329}
kafka_port=${OUTBOXD_KAFKA_PORT:-59092}
base=$repo/.run/bookworm
work=$repo/.run/deb-test
root=$work/root
start=$(date +%s)

say() { printf 'deb-test: %s\n' "$*"; }
fail() { printf 'deb-test: FAIL %s\n' "$*" >&2; exit 1; }
ok() { printf 'ok   %s\n' "$*"; }
[[ $EUID -eq 0 ]] || fail "needs root (debootstrap, mount, chroot)"

command -v lintian >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian >/dev/null
. "$repo/scripts/debootstrap.sh"
debootstrap_root bookworm "$base" systemd
if [[ $deb == --prepare ]]; then
    say "prepared: lintian, Debian 12 base in $base ($(( $(date +%s) - start )) s)"
    exit 0
fi
deb=$(realpath "$deb")

# ---- 1. lintian ---------------------------------------------------------------------------
say "lintian --pedantic --info $(basename "$deb")"
# Root is fine here: lintian only reads the package.
lintian --pedantic --show-overrides "$deb" 2>&1 | grep -E '^[A-Z]: ' | sed 's/^/   /' || true
lintian --pedantic --info --fail-on error,warning,info,pedantic "$deb" >/dev/null 2>&1 \
    || fail "lintian reports findings (above): fix them or explain each in deploy/debian/lintian-overrides"
ok "lintian: no finding beyond the explained overrides"

# ---- 2. a clean Debian 12 (an overlay of the base made above) ------------------------------

outboxd_pid=
stack_started=0
slot=
mounts=()
cleanup() {
    local rc=$?
    [[ -n $outboxd_pid ]] && kill -KILL "$outboxd_pid" 2>/dev/null || true
    if [[ -n $slot ]]; then
        psql -X -q "host=127.0.0.1 port=$pg_port dbname=app user=postgres" \
            -c "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot'" \
            >/dev/null 2>&1 || true
    fi
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" || true; done
    if ! awk -v r="$work/" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        rm -rf --one-file-system "$work"
    fi
    (( stack_started )) && bash "$repo/deploy/local/stack.sh" down >/dev/null 2>&1 || true
    (( rc == 0 )) || echo "deb-test FAILED after $(( $(date +%s) - start )) s" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if awk -v r="$work/" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    fail "something under $work is still mounted (an interrupted run?); umount it first"
fi
rm -rf --one-file-system "$work"
mkdir -p "$work/upper" "$work/overlay-work" "$root"
mount -t overlay overlay -o "lowerdir=$base,upperdir=$work/upper,workdir=$work/overlay-work" "$root"
mounts+=("$root")
mount -t proc proc "$root/proc"; mounts+=("$root/proc")
mount --bind /dev "$root/dev"; mounts+=("$root/dev")
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$deb" "$root/tmp/"
in_root() {
    chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}
say "chroot: $(in_root sh -c '. /etc/os-release; echo "$PRETTY_NAME"'), systemd $(in_root dpkg-query -W -f='${Version}' systemd)"

say "apt-get install ./$(basename "$deb")"
in_root apt-get update -qq
t0=$(date +%s)
in_root sh -c "cd /tmp && apt-get install -y --no-install-recommends ./$(basename "$deb")" >"$work/install.log" 2>&1 \
    || { cat "$work/install.log"; fail "apt-get install of the package failed"; }
sed -n '/^The following NEW/,/^[^ ]/p' "$work/install.log" | sed '$d' | sed 's/^/   /'
grep -E '^(Unpacking|Setting up) outboxd' "$work/install.log" | sed 's/^/   /'
ok "apt-get install ./$(basename "$deb") resolved its dependencies and installed ($(( $(date +%s) - t0 )) s)"

# ---- 3. what the package promises ---------------------------------------------------------
version=$(sed -n 's/^project(outboxd VERSION \([0-9.]*\).*/\1/p' "$repo/CMakeLists.txt")
got=$(in_root outboxd --version)
[[ $got == "outboxd $version" ]] || fail "outboxd --version printed '$got', CMake's project version is $version"
ok "outboxd --version: $got (CMake's project version)"
[[ $(in_root dpkg-query -W -f='${Version}' outboxd) == "$version" ]] || fail "package version is not $version"
ok "package version $version"

user=$(in_root getent passwd outboxd) || fail "no outboxd user after install"
IFS=: read -r _ _ uid gid _ home shell <<<"$user"
(( uid < 1000 )) || fail "outboxd is not a system user: uid $uid"
[[ $shell == /usr/sbin/nologin && $home == /var/lib/outboxd ]] || fail "outboxd user: home $home, shell $shell"
ok "system user: $user"
state=$(in_root stat -c '%U:%G %a' /var/lib/outboxd)
[[ $state == "outboxd:outboxd 750" ]] || fail "/var/lib/outboxd is $state, want outboxd:outboxd 750"
ok "/var/lib/outboxd: $state"
conffiles=$(in_root dpkg-query -W -f='${Conffiles}' outboxd | awk 'NF { print $1 }' | sort | tr '\n' ' ')
[[ $conffiles == "/etc/outboxd/outboxd.env /etc/outboxd/outboxd.toml " ]] || fail "conffiles: $conffiles"
ok "conffiles: $conffiles"
[[ $(in_root stat -c '%U %a' /etc/outboxd/outboxd.env) == "root 600" ]] || fail "outboxd.env is not root 0600"
ok "/etc/outboxd/outboxd.env: root 0600"
for f in /usr/share/outboxd/sql/outbox.sql /usr/share/outboxd/sql/role.sql /usr/share/man/man1/outboxd.1.gz /usr/bin/outboxd-tail; do
    [[ -e $root$f ]] || fail "missing $f"
done
ok "SQL toolkit, man pages, outboxd-tail installed"

unit=$(in_root sh -c 'pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system')/outboxd.service
[[ -f $root$unit ]] || unit=/lib/systemd/system/outboxd.service
[[ -f $root$unit ]] || fail "no outboxd.service installed"
enabled=$(in_root systemctl is-enabled outboxd.service 2>&1 || true)
[[ $enabled == disabled ]] || fail "systemctl is-enabled outboxd: $enabled (the package must not enable it)"
ok "unit $unit installed, not enabled (systemctl is-enabled: $enabled)"
grep -qx 'SuccessExitStatus=3' "$root$unit" || fail "unit lost SuccessExitStatus=3"
say "systemd-analyze verify --man=no $unit"
# --man=no: the chroot has no man-db to resolve Documentation=man:outboxd(1); the page itself is
# checked above.
in_root systemd-analyze verify --man=no "$unit" >"$work/verify.log" 2>&1 || { cat "$work/verify.log"; fail "systemd-analyze verify"; }
sed 's/^/   /' "$work/verify.log"
ok "systemd-analyze verify $unit: clean"
if in_root ldd /usr/bin/outboxd | grep -q 'not found'; then in_root ldd /usr/bin/outboxd; fail "ldd: a library is missing"; fi
ok "ldd /usr/bin/outboxd: $(in_root ldd /usr/bin/outboxd | wc -l) libraries, all resolved"

# ---- 4. the operator's steps, against the local stack -------------------------------------
if ! OUTBOXD_PG_PORT=$pg_port OUTBOXD_KAFKA_PORT=$kafka_port bash "$repo/deploy/local/stack.sh" status >/dev/null 2>&1; then
    say "starting the local stack (PostgreSQL $pg_port, Kafka $kafka_port)"
    stack_started=1
    OUTBOXD_PG_PORT=$pg_port OUTBOXD_KAFKA_PORT=$kafka_port bash "$repo/deploy/local/stack.sh" up >"$work/stack.log" 2>&1 \
        || { cat "$work/stack.log"; fail "stack.sh up"; }
fi
nonce=$(date +%s)$$
slot=deb_test_$nonce
topic=deb-test.$nonce
http_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
psql_app=(psql -X -q -v ON_ERROR_STOP=1 "host=127.0.0.1 port=$pg_port dbname=app user=postgres")
PGOPTIONS="-c client_min_messages=warning" "${psql_app[@]}" -f "$root/usr/share/outboxd/sql/outbox.sql" >/dev/null
ok "applied the installed /usr/share/outboxd/sql/outbox.sql"
# The operator edits the conffiles: the stack's servers, this run's slot and topic.
sed -i -e "s|^dsn = .*|dsn = \"host=127.0.0.1 port=$pg_port dbname=app user=postgres password=\${OUTBOXD_PG_PASSWORD}\"|" \
    -e "s|^slot = .*|slot = \"$slot\"|" -e 's|^create_slot = false|create_slot = true|' \
    -e "s|^\"bootstrap.servers\" = .*|\"bootstrap.servers\" = \"127.0.0.1:$kafka_port\"|" \
    -e '/^"security.protocol"/d' -e '/^"sasl\./d' \
    -e "s|^topic = .*|topic = \"$topic\"|" -e "s|^listen = .*|listen = \"127.0.0.1:$http_port\"|" \
    "$root/etc/outboxd/outboxd.toml"
sed -i -e 's/^OUTBOXD_PG_PASSWORD=.*/OUTBOXD_PG_PASSWORD=unused-by-trust-auth/' "$root/etc/outboxd/outboxd.env"
say "outboxd check --config /etc/outboxd/outboxd.toml (with outboxd.env's variables)"
in_root sh -c 'set -a; . /etc/outboxd/outboxd.env; exec outboxd check --config /etc/outboxd/outboxd.toml' \
    >"$work/check.log" 2>&1 || { cat "$work/check.log"; fail "outboxd check"; }
sed 's/^/   /' "$work/check.log"
ok "outboxd check: exit 0 (no failure; the warnings are about the local stack)"

# What systemd would run: the unit's ExecStart, as its User/Group, with its EnvironmentFile.
exec_start=$(sed -n 's/^ExecStart=//p' "$root$unit")
run_user=$(sed -n 's/^User=//p' "$root$unit")
env_file=$(sed -n 's/^EnvironmentFile=-\{0,1\}//p' "$root$unit")
mapfile -t env_lines < <(grep -E '^[A-Z_]+=' "$root$env_file")
say "running the unit's command in the chroot as $run_user: $exec_start"
# shellcheck disable=SC2086  # ExecStart is split into words as systemd does (no quotes in it)
chroot "$root" /usr/bin/setpriv --reuid="$run_user" --regid="$run_user" --init-groups \
    /usr/bin/env -i PATH=/usr/bin:/bin "${env_lines[@]}" $exec_start >"$work/outboxd.log" 2>&1 &
outboxd_pid=$!
deadline=$(( $(date +%s) + 60 ))
until grep -q 'streaming slot' "$work/outboxd.log"; do
    kill -0 "$outboxd_pid" 2>/dev/null || { cat "$work/outboxd.log"; fail "outboxd exited before streaming"; }
    (( $(date +%s) < deadline )) || { cat "$work/outboxd.log"; fail "outboxd did not stream within 60 s"; }
    sleep 0.2
done
grep -m1 'streaming slot' "$work/outboxd.log" | sed 's/^/   outboxd: /'
[[ $(ps -o uid= -p "$outboxd_pid" | tr -d " ") == "$uid" ]] || fail "outboxd does not run as $run_user (uid $uid)"
ok "outboxd streams as $run_user (uid $uid, pid $outboxd_pid)"

id=$("${psql_app[@]}" -At -c "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
    VALUES ('deb-test', '$nonce', 'PackageInstalled', '{\"nonce\": \"$nonce\"}') RETURNING id")
say "committed outbox row $id; reading $topic with the installed outboxd-tail"
event=$(timeout 60 chroot "$root" /usr/bin/outboxd-tail --brokers "127.0.0.1:$kafka_port" --from-beginning --max 1 "$topic" 2>"$work/tail.log") \
    || { cat "$work/tail.log" "$work/outboxd.log"; fail "no event on $topic within 60 s"; }
echo "   $event"
grep -q "\"id\":\"$id\"" <<<"$event" || fail "the event on $topic is not row $id"
ok "event $id arrived on $topic"
health=$(curl -fsS "http://127.0.0.1:$http_port/healthz") || fail "/healthz did not answer"
ok "/healthz: $health"

kill -TERM "$outboxd_pid"
rc=0
wait "$outboxd_pid" || rc=$?
outboxd_pid=
tail -n 3 "$work/outboxd.log" | sed 's/^/   outboxd: /'
(( rc == 0 )) || fail "outboxd exited $rc after SIGTERM"
ok "SIGTERM: outboxd exited 0"
[[ -f $root/var/lib/outboxd/$slot.state ]] || fail "no state file /var/lib/outboxd/$slot.state"
ok "state file /var/lib/outboxd/$slot.state ($(in_root stat -c "%U %a" "/var/lib/outboxd/$slot.state"))"

# ---- 5. purge -----------------------------------------------------------------------------
mapfile -t files < <(in_root dpkg-query -L outboxd | while read -r f; do [[ -f $root$f ]] && echo "$f"; done)
in_root apt-get purge -y outboxd >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "apt-get purge"; }
grep -E '^(Removing|Purging)' "$work/purge.log" | sed 's/^/   /'
status=$(in_root dpkg-query -W -f='${db:Status-Abbrev}' outboxd 2>/dev/null || true)
[[ -z $status || $status == "un " || $status == "pn " ]] || fail "dpkg still knows outboxd after purge: '$status'"
left=()
for f in "${files[@]}"; do [[ -e $root$f ]] && left+=("$f"); done
((${#left[@]} == 0)) || fail "left after purge: ${left[*]}"
ok "purge removed all ${#files[@]} files of the package"
[[ ! -e $root/etc/outboxd ]] || fail "/etc/outboxd left after purge: $(ls -A "$root/etc/outboxd")"
ok "purge removed /etc/outboxd (edited conffiles included)"
[[ -f $root/var/lib/outboxd/$slot.state ]] || fail "purge removed the state directory"
ok "purge kept /var/lib/outboxd and its state file; the outboxd user stays (its owner)"

say "passed in $(( $(date +%s) - start )) s"
