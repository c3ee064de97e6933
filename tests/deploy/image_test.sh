#!/usr/bin/env bash
# The container image (make image), run the way a container runtime runs it, against the local
# stack: `buildah run --isolation chroot` on the host's network, the image's own ENTRYPOINT, CMD
# and USER, the config mounted read-only over /etc/outboxd/outboxd.toml, a host directory as the
# state volume, the password in the environment. It checks:
#
#   - the image's config: USER 10001:10001, ENTRYPOINT /usr/bin/outboxd, STOPSIGNAL SIGTERM;
#   - no compiler or build tool in it, and ldd resolves every library of /usr/bin/outboxd;
#   - outboxd starts as uid 10001, reads the mounted config (its slot and topic), streams, and an
#     event committed in PostgreSQL arrives on its topic (read by the image's outboxd-tail);
#   - /healthz and /readyz answer 200; SIGTERM stops it with exit 0 and a state file on the volume;
#   - the image's size, printed.
#
#   tests/deploy/image_test.sh        (as root; make image-test builds the image first)
#
# Uses the local stack on OUTBOXD_PG_PORT / OUTBOXD_KAFKA_PORT and starts it (and stops it after)
# when it is not running.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
pg_port=${OUTBOXD_PG_PORT:-54329}
kafka_port=${OUTBOXD_KAFKA_PORT:-59092}
version=$(sed -n 's/^project(outboxd VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
image=localhost/outboxd:$version
work=$repo/.run/image-test
start=$(date +%s)
buildah() { bash "$repo/scripts/image.sh" buildah "$@"; }  # the project's storage options

say() { printf 'image-test: %s\n' "$*"; }
fail() { printf 'image-test: FAIL %s\n' "$*" >&2; exit 1; }
ok() { printf 'ok   %s\n' "$*"; }
[[ $EUID -eq 0 ]] || fail "needs root (buildah with chroot isolation)"

ctr=
run_pid=
stack_started=0
slot=
cleanup() {
    local rc=$?
    [[ -n $run_pid ]] && { kill -KILL $(descendants "$run_pid") "$run_pid" 2>/dev/null || true; wait "$run_pid" 2>/dev/null || true; }
    [[ -n $ctr ]] && buildah rm "$ctr" >/dev/null 2>&1 || true
    if [[ -n $slot ]]; then
        psql -X -q "host=127.0.0.1 port=$pg_port dbname=app user=postgres" \
            -c "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot'" \
            >/dev/null 2>&1 || true
    fi
    (( stack_started )) && bash deploy/local/stack.sh down >/dev/null 2>&1 || true
    (( rc == 0 )) || echo "image-test FAILED after $(( $(date +%s) - start )) s" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
descendants() {  # every process below $1
    local child
    for child in $(pgrep -P "$1" || true); do echo "$child"; descendants "$child"; done
}

# ---- the image's configuration -------------------------------------------------------------
buildah inspect --type image "$image" >/dev/null 2>&1 || fail "no image $image: run make image"
size=$(buildah images --format '{{.Size}}' "$image" | awk 'NR == 1')
say "$image: $size"
buildah inspect --type image "$image" >"$work.inspect.json" 2>/dev/null || true
read -r user entrypoint cmd stopsignal < <(python3 - "$work.inspect.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))["OCIv1"]["config"]
print(c.get("User", ""), json.dumps(c.get("Entrypoint") or []).replace(" ", ""),
      json.dumps(c.get("Cmd") or []).replace(" ", ""), c.get("StopSignal", ""))
EOF
)
rm -f "$work.inspect.json"
[[ $user == 10001:10001 ]] || fail "image USER is '$user', want 10001:10001"
[[ $entrypoint == '["/usr/bin/outboxd"]' ]] || fail "image ENTRYPOINT is $entrypoint"
[[ $stopsignal == SIGTERM ]] || fail "image STOPSIGNAL is '$stopsignal'"
ok "image config: USER $user, ENTRYPOINT $entrypoint, CMD $cmd, STOPSIGNAL $stopsignal"
mapfile -t command < <(python3 -c 'import json,sys; [print(a) for a in json.loads(sys.argv[1]) + json.loads(sys.argv[2])]' \
    "$entrypoint" "$cmd")

rm -rf "$work" && mkdir -p "$work/state"
ctr=$(buildah from --pull=never --name "outboxd-image-test-$$" "$image")

# ---- what is in it --------------------------------------------------------------------------
tools=$(buildah run --isolation chroot --user 0:0 "$ctr" -- sh -c \
    'for t in cc c++ gcc g++ clang ld as make cmake ninja; do command -v "$t" || true; done')
[[ -z $tools ]] || fail "build tools in the image: $tools"
dev=$(buildah run --isolation chroot --user 0:0 "$ctr" -- sh -c \
    "dpkg-query -W -f='\${db:Status-Abbrev} \${Package}\n' | awk '\$1 == \"ii\" && \$2 ~ /^(gcc|g\\+\\+|cpp|clang)(-[0-9]+)?\$|^(binutils|build-essential|libc6-dev|libstdc\\+\\+-[0-9]+-dev|cmake|make|ninja-build)\$/ { print \$2 }'")
[[ -z $dev ]] || fail "compiler packages in the image: $dev"
ok "no compiler, linker or build tool in the image (no cc, c++, gcc, g++, clang, ld, as, make, cmake or ninja; no gcc, g++, cpp, binutils, libc6-dev or build-essential package)"
ldd_out=$(buildah run --isolation chroot "$ctr" -- ldd /usr/bin/outboxd)
! grep -q 'not found' <<<"$ldd_out" || { echo "$ldd_out"; fail "ldd /usr/bin/outboxd: a library is missing"; }
ok "ldd /usr/bin/outboxd: $(wc -l <<<"$ldd_out") libraries, all resolved"
got=$(buildah run --isolation chroot "$ctr" -- /usr/bin/outboxd --version)
[[ $got == "outboxd $version" ]] || fail "outboxd --version in the image: '$got', want 'outboxd $version'"
ok "outboxd --version in the image: $got"

# ---- run it against the local stack ---------------------------------------------------------
if ! OUTBOXD_PG_PORT=$pg_port OUTBOXD_KAFKA_PORT=$kafka_port bash deploy/local/stack.sh status >/dev/null 2>&1; then
    say "starting the local stack (PostgreSQL $pg_port, Kafka $kafka_port)"
    stack_started=1
    OUTBOXD_PG_PORT=$pg_port OUTBOXD_KAFKA_PORT=$kafka_port bash deploy/local/stack.sh up >"$work/stack.log" 2>&1 \
        || { cat "$work/stack.log"; fail "stack.sh up"; }
fi
nonce=$(date +%s)$$
slot=image_test_$nonce
topic=image-test.$nonce
http_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
psql_app=(psql -X -q -v ON_ERROR_STOP=1 "host=127.0.0.1 port=$pg_port dbname=app user=postgres")
PGOPTIONS="-c client_min_messages=warning" "${psql_app[@]}" -f sql/outbox.sql >/dev/null
cat >"$work/outboxd.toml" <<EOF
# image_test.sh: the local stack, this run's slot and topic.
[source]
dsn = "host=127.0.0.1 port=$pg_port dbname=app user=postgres password=\${OUTBOXD_PG_PASSWORD}"
slot = "$slot"
publication = "outboxd"
create_slot = true

[sink.kafka]
"bootstrap.servers" = "127.0.0.1:$kafka_port"

[[outbox]]
table = "public.outbox"
topic = "$topic"

[http]
listen = "127.0.0.1:$http_port"

[log]
format = "json"
EOF
chmod 0644 "$work/outboxd.toml"
# The state volume as Kubernetes' fsGroup makes it: writable by the image's user.
chown 10001:10001 "$work/state" && chmod 0750 "$work/state"

say "buildah run (host network): ${command[*]}, config mounted read-only"
buildah run --isolation chroot --env OUTBOXD_PG_PASSWORD=unused-by-trust-auth \
    --volume "$work/outboxd.toml:/etc/outboxd/outboxd.toml:ro" --volume "$work/state:/var/lib/outboxd" \
    "$ctr" -- "${command[@]}" >"$work/outboxd.log" 2>&1 &
run_pid=$!
deadline=$(( $(date +%s) + 60 ))
until grep -q 'streaming slot' "$work/outboxd.log"; do
    kill -0 "$run_pid" 2>/dev/null || { cat "$work/outboxd.log"; fail "outboxd exited before streaming"; }
    (( $(date +%s) < deadline )) || { cat "$work/outboxd.log"; fail "outboxd did not stream within 60 s"; }
    sleep 0.2
done
grep -E 'starting|streaming slot' "$work/outboxd.log" | sed 's/^/   outboxd: /'
grep -q "streaming slot '$slot'" "$work/outboxd.log" || fail "outboxd does not stream the mounted config's slot $slot"
pid=
for p in $(descendants "$run_pid"); do [[ $(cat "/proc/$p/comm" 2>/dev/null) == outboxd ]] && pid=$p; done
[[ -n $pid ]] || fail "cannot find the outboxd process under buildah run ($run_pid)"
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
gid=$(awk '/^Gid:/ { print $2 }' "/proc/$pid/status")
[[ $uid == 10001 && $gid == 10001 ]] || fail "outboxd runs as uid $uid gid $gid, want 10001"
ok "outboxd runs as uid $uid gid $gid (pid $pid) with the mounted config (slot $slot)"

id=$("${psql_app[@]}" -At -c "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
    VALUES ('image-test', '$nonce', 'ImageRan', '{\"nonce\": \"$nonce\"}') RETURNING id")
say "committed outbox row $id; reading $topic with the image's outboxd-tail"
event=$(timeout 90 bash "$repo/scripts/image.sh" buildah run --isolation chroot "$ctr" -- \
    outboxd-tail --brokers "127.0.0.1:$kafka_port" --from-beginning --max 1 "$topic" 2>"$work/tail.log") \
    || { cat "$work/tail.log" "$work/outboxd.log"; fail "no event on $topic within 90 s"; }
echo "   $event"
grep -q "\"id\":\"$id\"" <<<"$event" || fail "the event on $topic is not row $id"
ok "event $id arrived on $topic"
# /readyz turns 200 once librdkafka reported the brokers' state (a few seconds after the start).
for endpoint in healthz readyz; do
    deadline=$(( $(date +%s) + 30 ))
    until code=$(curl -s -o "$work/$endpoint" -w '%{http_code}' "http://127.0.0.1:$http_port/$endpoint") \
            && [[ $code == 200 ]]; do
        (( $(date +%s) < deadline )) || fail "/$endpoint answered $code for 30 s: $(cat "$work/$endpoint")"
        sleep 0.5
    done
    ok "/$endpoint: $code $(head -c 80 "$work/$endpoint")"
done

kill -TERM "$pid"
rc=0
wait "$run_pid" || rc=$?
run_pid=
tail -n 2 "$work/outboxd.log" | sed 's/^/   outboxd: /'
(( rc == 0 )) || fail "outboxd exited $rc after SIGTERM"
ok "SIGTERM: outboxd exited 0"
[[ -f $work/state/$slot.state ]] || fail "no state file on the state volume"
ok "state file on the volume: $slot.state ($(stat -c '%u:%g %a' "$work/state/$slot.state"))"
say "passed in $(( $(date +%s) - start )) s; $image: $size"
