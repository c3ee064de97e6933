#!/usr/bin/env bash
# A PostgreSQL primary and its physical streaming standby on 127.0.0.1, for the switchover
# test (switchover_test.cc) and decoding on a standby (standby_test.cc): the standby keeps a
# physical slot on the primary (primary_slot_name) and sends hot_standby_feedback; on 17 and
# later it synchronizes failover slots (sync_replication_slots) and the primary waits for it
# before logical decoding sends anything (synchronized_standby_slots). The primary commits
# synchronously to it, so that every acknowledged commit survives a promotion.
#
#   tests/integration/pg_pair.sh up              # fresh pair, standby streaming
#   tests/integration/pg_pair.sh quiet           # the primary writes no WAL by itself from now on
#                                                # (autovacuum off, no timed checkpoint), and its
#                                                # last standby snapshot (running-transactions
#                                                # record) is written and replayed: a quiet primary
#   tests/integration/pg_pair.sh promote         # promote the standby (waits until read-write)
#   tests/integration/pg_pair.sh stop-primary fast|immediate
#   tests/integration/pg_pair.sh detach          # the standby stops receiving WAL (its replay stays
#                                                # where it is) and the primary stops waiting for it
#   tests/integration/pg_pair.sh restore         # stop both, start the standby's copy as a primary on
#                                                # its timeline (no promotion): a restored snapshot
#   tests/integration/pg_pair.sh down            # stop both, delete their data
#
# Environment: OUTBOXD_PAIR_PORT (primary, default 54347; the standby uses the next port),
# OUTBOXD_PAIR_VERSION (default 17; 16 or later), and for `up`: OUTBOXD_PAIR_FEEDBACK (the
# standby's hot_standby_feedback, default on), OUTBOXD_PAIR_SYNC (on, the default: the primary
# commits synchronously to the standby; off: asynchronous, as most streaming setups run), and
# OUTBOXD_PAIR_PRIMARY_CONF, OUTBOXD_PAIR_STANDBY_CONF (more postgresql.conf lines, e.g.
# "idle_replication_slot_timeout = 60"). Binaries come from deploy/local/stack.sh.
#
# The base backup is a cold copy of the stopped primary: the official builds carry no
# pg_basebackup, and Debian's pg_basebackup 15 refuses newer servers. A copy of a cleanly
# stopped data directory is a valid base backup.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd -- "$SCRIPT_DIR/../.." && pwd -P)
P1=${OUTBOXD_PAIR_PORT:-54347}
P2=$((P1 + 1))
VERSION=${OUTBOXD_PAIR_VERSION:-17}
FEEDBACK=${OUTBOXD_PAIR_FEEDBACK:-on}
SYNC=${OUTBOXD_PAIR_SYNC:-on}
PG_OS_USER=${OUTBOXD_PG_USER:-outboxd-dev}
CLIENT=/usr/lib/postgresql/15/bin
# Outside the repository: the PG user must reach it whatever the repository's permissions.
ROOT="/var/tmp/outboxd-pair-$(printf '%s:%s' "$REPO" "$P1" | sha256sum | cut -c1-12)"

say() { printf 'pg_pair: %s\n' "$*" >&2; }
die() { printf 'pg_pair: error: %s\n' "$*" >&2; exit 1; }

as_pg() {
    if [[ $EUID -eq 0 ]]; then (cd / && runuser -u "$PG_OS_USER" -- "$@"); else (cd / && "$@"); fi
}
psql_at() { "$CLIENT/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d "${3:-app}" -c "$2"; }
wait_until() {  # seconds, description, command... (run again each time: a function, not "$(...)")
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what: not within the deadline"
        sleep 0.2
    done
}
query_is() { test "$(psql_at "$1" "$2" "${4:-app}")" = "$3"; }  # port, query, expected value[, database]

node_conf() {  # data dir, port, extra lines
    as_pg tee "$1/outboxd.conf" >/dev/null <<EOF
# Written by tests/integration/pg_pair.sh.
listen_addresses = '127.0.0.1'
port = $2
unix_socket_directories = '$ROOT/sock'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
hot_standby = on
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
timezone = 'UTC'
$3
EOF
}

stop_node() {  # data dir, mode
    [[ -f $1/postmaster.pid ]] || return 0
    as_pg "$BIN/pg_ctl" -D "$1" -m "$2" -w -t 60 -s stop || true
}

BIN=$(OUTBOXD_PG_VERSION=$VERSION bash "$REPO/deploy/local/stack.sh" pgbin)

up() {
    down
    [[ $EUID -ne 0 ]] || getent passwd "$PG_OS_USER" >/dev/null ||
        useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PG_OS_USER"
    mkdir -p "$ROOT/sock" "$ROOT/log"
    chmod 0755 "$ROOT" "$ROOT/sock"
    [[ $EUID -ne 0 ]] || chown -R "$PG_OS_USER:" "$ROOT"
    as_pg "$BIN/initdb" -D "$ROOT/primary" -U postgres --auth=trust --encoding=UTF8 --no-locale \
        >"$ROOT/log/initdb.log" 2>&1 || { tail -n 20 "$ROOT/log/initdb.log" >&2; die "initdb failed"; }
    as_pg tee "$ROOT/primary/pg_hba.conf" >/dev/null <<'EOF'
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
local   replication  all                  trust
host    replication  all   127.0.0.1/32   trust
EOF
    printf "\ninclude_if_exists = 'outboxd.conf'\n" | as_pg tee -a "$ROOT/primary/postgresql.conf" >/dev/null
    node_conf "$ROOT/primary" "$P1" ""
    as_pg "$BIN/pg_ctl" -D "$ROOT/primary" -l "$ROOT/log/primary.log" -w -t 60 -s start
    psql_at "$P1" "CREATE DATABASE app" postgres
    psql_at "$P1" "SELECT pg_create_physical_replication_slot('standby1')" >/dev/null
    stop_node "$ROOT/primary" fast
    # Cold base backup; the copy must not carry the primary's slots or pid file.
    as_pg cp -a "$ROOT/primary" "$ROOT/standby"
    as_pg find "$ROOT/standby/pg_replslot" -mindepth 1 -delete
    as_pg rm -f "$ROOT/standby/postmaster.pid"
    # Failover slots (17+): the primary waits for the standby's physical slot before logical
    # decoding sends a change, and the standby's slot sync worker copies failover slots.
    local primary_extra="" standby_extra=""
    if ((VERSION >= 17)); then
        primary_extra="synchronized_standby_slots = 'standby1'"
        standby_extra="sync_replication_slots = on"
    fi
    [[ $SYNC == off ]] || primary_extra+=$'\n'"synchronous_standby_names = 'standby1'"
    node_conf "$ROOT/primary" "$P1" "$primary_extra
${OUTBOXD_PAIR_PRIMARY_CONF:-}"
    # dbname in primary_conninfo: the slot sync worker connects to a database.
    node_conf "$ROOT/standby" "$P2" "primary_conninfo = 'host=127.0.0.1 port=$P1 user=postgres dbname=app application_name=standby1'
primary_slot_name = 'standby1'
hot_standby_feedback = $FEEDBACK
$standby_extra
${OUTBOXD_PAIR_STANDBY_CONF:-}"
    as_pg touch "$ROOT/standby/standby.signal"
    as_pg "$BIN/pg_ctl" -D "$ROOT/primary" -l "$ROOT/log/primary.log" -w -t 60 -s start
    as_pg "$BIN/pg_ctl" -D "$ROOT/standby" -l "$ROOT/log/standby.log" -w -t 60 -s start
    local sync_state=sync
    [[ $SYNC != off ]] || sync_state=async
    wait_until 60 "standby streaming" query_is "$P1" \
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'standby1' AND state = 'streaming' AND sync_state = '$sync_state'" 1
    say "primary 127.0.0.1:$P1, standby 127.0.0.1:$P2 streaming (PostgreSQL $VERSION, hot_standby_feedback $FEEDBACK, synchronous $SYNC, data $ROOT)"
}

# A primary that writes no WAL by itself: without autovacuum and timed checkpoints, only the
# background writer's standby snapshot (a running-transactions record, logged within 15 s of
# the last write) is still to come; wait until pg_walinspect shows it and the standby replayed
# it. From then on a logical slot created on the standby waits for the next such record, which
# only new activity on the primary or pg_log_standby_snapshot() writes.
quiet() {
    psql_at "$P1" "ALTER SYSTEM SET autovacuum = off" postgres
    psql_at "$P1" "ALTER SYSTEM SET checkpoint_timeout = '1h'" postgres
    psql_at "$P1" "SELECT pg_reload_conf()" postgres >/dev/null
    psql_at "$P1" "CREATE EXTENSION IF NOT EXISTS pg_walinspect" postgres
    # A commit with an xid is a write the background writer answers with a snapshot.
    psql_at "$P1" "SELECT pg_current_xact_id()" postgres >/dev/null
    local from end
    from=$(psql_at "$P1" "SELECT pg_current_wal_insert_lsn()" postgres)
    wait_until 60 "the primary's standby snapshot after its last write" query_is "$P1" \
        "SELECT count(*) > 0 FROM pg_get_wal_records_info('$from', pg_current_wal_flush_lsn()) WHERE resource_manager = 'Standby' AND record_type = 'RUNNING_XACTS'" t postgres
    end=$(psql_at "$P1" "SELECT pg_current_wal_flush_lsn()" postgres)
    wait_until 60 "the standby replaying up to $end" query_is "$P2" "SELECT pg_last_wal_replay_lsn() >= '$end'" t
    say "primary 127.0.0.1:$P1 is quiet at $end (the standby replayed it)"
}

promote() {
    as_pg "$BIN/pg_ctl" -D "$ROOT/standby" -w -t 60 -s promote
    wait_until 60 "standby promoted" query_is "$P2" "SELECT pg_is_in_recovery()" f
    say "standby 127.0.0.1:$P2 promoted"
}

# What a standby that fell behind looks like: it keeps what it replayed and hears nothing more,
# and the primary commits (and decodes) without it.
detach() {
    psql_at "$P2" "ALTER SYSTEM SET primary_conninfo = ''" >/dev/null
    psql_at "$P2" "ALTER SYSTEM SET sync_replication_slots = off" >/dev/null
    psql_at "$P2" "SELECT pg_reload_conf()" >/dev/null
    psql_at "$P1" "ALTER SYSTEM SET synchronous_standby_names = ''" >/dev/null
    psql_at "$P1" "ALTER SYSTEM SET synchronized_standby_slots = ''" >/dev/null
    psql_at "$P1" "SELECT pg_reload_conf()" >/dev/null
    wait_until 60 "standby detached" query_is "$P1" \
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'standby1'" 0
    say "standby 127.0.0.1:$P2 detached at $(psql_at "$P2" "SELECT pg_last_wal_replay_lsn()")"
}

# A restore of a file-system snapshot of the standby: same system identifier, same timeline, an
# earlier position than the primary reached. Crash recovery, not archive recovery: no new timeline.
restore() {
    stop_node "$ROOT/primary" fast
    stop_node "$ROOT/standby" fast
    as_pg rm -f "$ROOT/standby/standby.signal"
    as_pg "$BIN/pg_ctl" -D "$ROOT/standby" -l "$ROOT/log/standby.log" -w -t 60 -s start
    wait_until 60 "standby restored as a primary" query_is "$P2" "SELECT pg_is_in_recovery()" f
    say "standby's copy 127.0.0.1:$P2 runs as a primary on timeline $(psql_at "$P2" "SELECT timeline_id FROM pg_control_checkpoint()")"
}

down() {
    if [[ -d $ROOT ]]; then
        stop_node "$ROOT/standby" immediate
        stop_node "$ROOT/primary" immediate
        rm -rf -- "$ROOT"
    fi
}

case ${1:-} in
    up) up ;;
    quiet) quiet ;;
    promote) promote ;;
    stop-primary)
        case ${2:-} in fast | immediate) ;; *) die "stop-primary fast|immediate" ;; esac
        stop_node "$ROOT/primary" "$2"
        say "primary 127.0.0.1:$P1 stopped ($2)"
        ;;
    detach) detach ;;
    restore) restore ;;
    down) down ;;
    *) sed -n 2,27p "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
