#!/usr/bin/env bash
# TLS servers for tests/integration/tls_test.cc, generated fresh at every `up`, removed by `down`:
#   - a throwaway CA (and a second, unrelated CA for the wrong-CA test), server certificates for
#     localhost and 127.0.0.1, made with openssl; a PKCS12 key store and trust store for Kafka
#     (openssl, keytool);
#   - PostgreSQL 15 with ssl=on whose pg_hba.conf admits role outboxd only over hostssl with
#     scram-sha-256 (postgres itself only over the Unix socket, for test setup);
#   - one KRaft Kafka broker (the jars of deploy/local/stack.sh) with an SSL and a SASL_SSL
#     listener; SASL mechanisms SCRAM-SHA-512 (user outboxd created at format time) and PLAIN
#     (same user and password: librdkafka before 2.6.1 cannot do SCRAM with Kafka 4.x);
#   - when the installed librdkafka is older than 2.6.1 (Debian 12 has 2.0.2), also a Kafka 3.9
#     KRaft broker (jars from tests/integration/kafka3-pom.xml, which that librdkafka can do SCRAM
#     with) with one SASL_SSL listener, SCRAM-SHA-512 only, same user and password; it starts in
#     parallel with the 4.x broker. OUTBOXD_TLS_KAFKA3=1|0 forces it on or off.
# Everything binds 127.0.0.1. Passwords are random, kept in 0600 files, and never passed on a
# command line (the Kafka format tool reads its arguments from a java @argfile).
#
#   tests/integration/tls_stack.sh up | down | classpath   (classpath: resolve the 3.9 jars only)
#
# Ports (defaults derived from the local stack's, so that parallel stacks do not collide):
#   OUTBOXD_TLS_PG_PORT     PostgreSQL over TLS   (default OUTBOXD_PG_PORT + 200)
#   OUTBOXD_TLS_KAFKA_PORT  Kafka SSL listener    (default OUTBOXD_KAFKA_PORT + 5);
#                           SASL_SSL is the next port, the KRaft controller the one after;
#                           the Kafka 3.9 SASL_SSL listener the one after, its controller the next.
# `up` writes $REPO/.run/tls/env (KEY=VALUE lines) for the test.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd -- "$SCRIPT_DIR/../.." && pwd -P)
TLS="$REPO/.run/tls"
PG_PORT=${OUTBOXD_TLS_PG_PORT:-$((${OUTBOXD_PG_PORT:-54329} + 200))}
SSL_PORT=${OUTBOXD_TLS_KAFKA_PORT:-$((${OUTBOXD_KAFKA_PORT:-59092} + 5))}
SASL_PORT=$((SSL_PORT + 1))
CONTROLLER_PORT=$((SSL_PORT + 2))
SCRAM3_PORT=$((SSL_PORT + 3))
CONTROLLER3_PORT=$((SSL_PORT + 4))
PG_OS_USER=${OUTBOXD_PG_USER:-outboxd-dev}
PG_BIN=/usr/lib/postgresql/15/bin
TIMEOUT=${OUTBOXD_STACK_TIMEOUT:-120}

say() { printf 'tls-stack: %s\n' "$*" >&2; }
die() { printf 'tls-stack: error: %s\n' "$*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# PostgreSQL refuses to run as root: as root, the data lives under /var/tmp (the repository may
# not be reachable by the PostgreSQL user) and runs as $PG_OS_USER.
if [[ $EUID -eq 0 ]]; then
    PG_ROOT="/var/tmp/outboxd-tls-$(printf '%s' "$REPO" | sha256sum | cut -c1-12)"
    as_pg() { (cd / && runuser -u "$PG_OS_USER" -- "$@"); }
else
    PG_ROOT="$TLS/pg"
    as_pg() { (cd / && "$@"); }
fi
PGDATA="$PG_ROOT/data"
PG_SOCK="$PG_ROOT/sock"
KAFKA_DIR="$TLS/kafka"
KAFKA_PID_FILE="$KAFKA_DIR/kafka.pid"
KAFKA3_DIR="$TLS/kafka3"
KAFKA3_POM="$SCRIPT_DIR/kafka3-pom.xml"
KAFKA3_CP_FILE="$REPO/.run/kafka3/classpath.txt"

# librdkafka before 2.6.1 cannot do SCRAM with Kafka 4.x (confluentinc/librdkafka#4895).
need_kafka3() {
    case ${OUTBOXD_TLS_KAFKA3:-} in 1) return 0 ;; 0) return 1 ;; esac
    local v
    v=$(pkg-config --modversion rdkafka 2>/dev/null) || return 0
    [[ $(printf '%s\n2.6.1\n' "$v" | sort -V | head -1) != 2.6.1 ]]
}

kafka3_classpath() {
    mkdir -p "$(dirname "$KAFKA3_CP_FILE")"
    if [[ -s $KAFKA3_CP_FILE && $KAFKA3_CP_FILE -nt $KAFKA3_POM ]]; then
        local ok=1 jar jars
        IFS=: read -r -a jars <"$KAFKA3_CP_FILE" || true
        for jar in "${jars[@]}"; do [[ -f $jar ]] || { ok=0; break; }; done
        ((ok)) && return 0
    fi
    command -v mvn >/dev/null || die "kafka3: mvn not found; run scripts/deps.sh"
    say "kafka3: resolving the Kafka 3.9 jars with Maven (into ~/.m2)"
    local log="${KAFKA3_CP_FILE%/*}/mvn.log" tmp="$KAFKA3_CP_FILE.tmp"
    if ! mvn -B -q -f "$KAFKA3_POM" dependency:build-classpath -Dmdep.outputFile="$tmp" >"$log" 2>&1 ||
        [[ ! -s $tmp ]]; then
        tail -20 "$log" >&2
        die "kafka3: Maven could not resolve the Kafka 3.9 jars (see $log)"
    fi
    mv -f "$tmp" "$KAFKA3_CP_FILE"
}

secret() { head -c 18 /dev/urandom | base64 | tr -d '+/='; }

make_certs() {
    local d="$TLS/certs" s="$TLS/secrets"
    mkdir -p "$d" "$s"
    chmod 0700 "$s"
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    local q=(-days 2 -sha256)
    openssl req -x509 "${ec[@]}" "${q[@]}" -keyout "$d/ca.key" -out "$d/ca.pem" \
        -subj "/CN=outboxd test CA" 2>/dev/null
    openssl req -x509 "${ec[@]}" "${q[@]}" -keyout "$d/other-ca.key" -out "$d/other-ca.pem" \
        -subj "/CN=outboxd unrelated CA" 2>/dev/null
    openssl req "${ec[@]}" -keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        "${q[@]}" -extfile "$d/server.ext" -out "$d/server.pem" 2>/dev/null
    (umask 077
     secret >"$s/store_password"
     secret >"$s/pg_password"
     secret >"$s/kafka_password")
    openssl pkcs12 -export -in "$d/server.pem" -inkey "$d/server.key" -certfile "$d/ca.pem" \
        -name kafka -out "$d/server.p12" -passout "file:$s/store_password"
    keytool -importcert -noprompt -alias ca -file "$d/ca.pem" -keystore "$d/truststore.p12" \
        -storetype PKCS12 -storepass:file "$s/store_password" >/dev/null 2>&1 ||
        die "keytool could not write the trust store"
}

pg_up() {
    if [[ $EUID -eq 0 ]] && ! getent passwd "$PG_OS_USER" >/dev/null; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$PG_OS_USER"
    fi
    port_open "$PG_PORT" && die "127.0.0.1:$PG_PORT is in use; set OUTBOXD_TLS_PG_PORT"
    rm -rf -- "$PG_ROOT"
    mkdir -p "$PG_ROOT" "$PG_SOCK"
    [[ $EUID -ne 0 ]] || chown "$PG_OS_USER:" "$PG_ROOT" "$PG_SOCK"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --no-locale \
        >"$TLS/initdb.log" 2>&1 || { tail -20 "$TLS/initdb.log" >&2; die "initdb failed"; }
    # The server reads its key as its own user, mode 0600.
    local owner=()
    [[ $EUID -ne 0 ]] || owner=(-o "$PG_OS_USER" -g "$(id -gn "$PG_OS_USER")")
    install "${owner[@]}" -m 0644 "$TLS/certs/server.pem" "$PGDATA/server.crt"
    install "${owner[@]}" -m 0600 "$TLS/certs/server.key" "$PGDATA/server.key"
    as_pg tee "$PGDATA/pg_hba.conf" >/dev/null <<'EOF'
# Written by tests/integration/tls_stack.sh: outboxd only over TLS with a SCRAM password.
# TYPE   DATABASE     USER      ADDRESS        METHOD
local    all          postgres                 trust
hostssl  all          outboxd   127.0.0.1/32   scram-sha-256
hostssl  replication  outboxd   127.0.0.1/32   scram-sha-256
EOF
    as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'
wal_level = logical
max_replication_slots = 4
max_wal_senders = 4
max_connections = 30
shared_buffers = 32MB
fsync = off
timezone = 'UTC'
EOF
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_ROOT/postgres.log" -w -t "$TIMEOUT" -s start ||
        { tail -20 "$PG_ROOT/postgres.log" >&2; die "PostgreSQL did not start"; }
    # The password goes through stdin, not the command line.
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres <<EOF
CREATE DATABASE app;
CREATE ROLE outboxd LOGIN REPLICATION PASSWORD '$(<"$TLS/secrets/pg_password")';
EOF
    say "postgres: TLS only on 127.0.0.1:$PG_PORT (data $PGDATA)"
}

pg_down() {
    if [[ -f $PGDATA/postmaster.pid ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -s stop || true
    fi
    rm -rf -- "$PG_ROOT"
}

# kafka_pid [DIR]: the pid of the broker started from DIR (default the 4.x one), if running.
kafka_pid() {
    local pid dir=${1:-$KAFKA_DIR}
    pid=$(cat "$dir/kafka.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $dir/server.properties" || return 1
    printf '%s\n' "$pid"
}

kafka_up() {
    local p
    for p in "$SSL_PORT" "$SASL_PORT" "$CONTROLLER_PORT"; do
        port_open "$p" && die "127.0.0.1:$p is in use; set OUTBOXD_TLS_KAFKA_PORT"
    done
    bash "$REPO/deploy/local/stack.sh" classpath
    local cp store
    cp=$(<"$REPO/.run/kafka/classpath.txt")
    store=$(<"$TLS/secrets/store_password")
    rm -rf -- "$KAFKA_DIR"
    mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
    (umask 077; cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by tests/integration/tls_stack.sh
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=SSL://127.0.0.1:$SSL_PORT,SASL_SSL://127.0.0.1:$SASL_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=SSL://127.0.0.1:$SSL_PORT,SASL_SSL://127.0.0.1:$SASL_PORT
listener.security.protocol.map=SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SSL
controller.listener.names=CONTROLLER
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_outboxd="$(<"$TLS/secrets/kafka_password")";
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS/certs/server.p12
ssl.keystore.password=$store
ssl.key.password=$store
ssl.truststore.type=PKCS12
ssl.truststore.location=$TLS/certs/truststore.p12
ssl.truststore.password=$store
ssl.client.auth=none
log.dirs=$KAFKA_DIR/data
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
num.network.threads=2
num.io.threads=2
EOF
    # The SCRAM credential is created at format time; the java launcher reads the arguments
    # from this file, so the password never shows in a process list.
    printf '%s\n' -cp "$cp" kafka.tools.StorageTool format --ignore-formatted \
        -t "$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')" \
        -c "$KAFKA_DIR/server.properties" \
        --add-scram "SCRAM-SHA-512=[name=outboxd,password=$(<"$TLS/secrets/kafka_password")]" \
        >"$KAFKA_DIR/format.args")
    cat >"$KAFKA_DIR/log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="out" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="out"/></Root>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
  </Loggers>
</Configuration>
EOF
    java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.xml" "@$KAFKA_DIR/format.args" \
        >"$KAFKA_DIR/logs/format.log" 2>&1 || { tail -20 "$KAFKA_DIR/logs/format.log" >&2; die "kafka format failed"; }
    rm -f "$KAFKA_DIR/format.args"
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$KAFKA_PID_FILE" \
        java -Xms128m -Xmx384m -XX:+UseSerialGC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.xml" \
        -cp "$cp" kafka.Kafka "$KAFKA_DIR/server.properties" \
        >>"$KAFKA_DIR/logs/kafka.out" 2>&1 </dev/null &
    disown "$!" 2>/dev/null || true
    local deadline=$((SECONDS + TIMEOUT)) pid=""
    until [[ -n $pid ]] && port_open "$SSL_PORT" && port_open "$SASL_PORT" &&
        grep -q "Kafka Server started" "$KAFKA_DIR/logs/kafka.out" 2>/dev/null; do
        pid=$(kafka_pid) || pid=""
        if ((SECONDS >= deadline)); then
            tail -30 "$KAFKA_DIR/logs/kafka.out" >&2 || true
            kafka_down
            die "kafka: not ready after ${TIMEOUT}s"
        fi
        sleep 0.3
    done
    say "kafka: SSL on 127.0.0.1:$SSL_PORT, SASL_SSL (SCRAM-SHA-512, PLAIN) on 127.0.0.1:$SASL_PORT (pid $pid)"
}

kafka_down() {
    local pid dir=${1:-$KAFKA_DIR}
    if pid=$(kafka_pid "$dir"); then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null; do
            ((SECONDS < deadline)) || { kill -KILL "$pid" 2>/dev/null || true; }
            sleep 0.2
        done
    fi
    rm -rf -- "$dir"
}

# Kafka 3.9 KRaft broker: SASL_SSL with SCRAM-SHA-512 only (also between the node and itself),
# user outboxd created at format time. Runs in the background of `up`, in parallel with kafka_up.
kafka3_up() {
    local p
    for p in "$SCRAM3_PORT" "$CONTROLLER3_PORT"; do
        port_open "$p" && die "127.0.0.1:$p is in use (Kafka 3.9); set OUTBOXD_TLS_KAFKA_PORT"
    done
    local cp store password d=$KAFKA3_DIR
    cp=$(<"$KAFKA3_CP_FILE")
    store=$(<"$TLS/secrets/store_password")
    password=$(<"$TLS/secrets/kafka_password")
    rm -rf -- "$d"
    mkdir -p "$d/data" "$d/logs"
    (umask 077; cat >"$d/server.properties" <<EOF
# Written by tests/integration/tls_stack.sh (Kafka 3.9, for SCRAM with librdkafka < 2.6.1)
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER3_PORT
listeners=SASL_SSL://127.0.0.1:$SCRAM3_PORT,CONTROLLER://127.0.0.1:$CONTROLLER3_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$SCRAM3_PORT
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
controller.listener.names=CONTROLLER
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="outboxd" password="$password";
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS/certs/server.p12
ssl.keystore.password=$store
ssl.key.password=$store
ssl.truststore.type=PKCS12
ssl.truststore.location=$TLS/certs/truststore.p12
ssl.truststore.password=$store
ssl.client.auth=none
log.dirs=$d/data
auto.create.topics.enable=true
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
EOF
    printf '%s\n' -cp "$cp" kafka.tools.StorageTool format --ignore-formatted \
        -t "$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')" \
        -c "$d/server.properties" \
        --add-scram "SCRAM-SHA-512=[name=outboxd,password=$password]" \
        >"$d/format.args")
    cat >"$d/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, out
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.kafka.clients=WARN
EOF
    java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j.configuration="file:$d/log4j.properties" "@$d/format.args" \
        >"$d/logs/format.log" 2>&1 || { rm -f "$d/format.args"; tail -20 "$d/logs/format.log" >&2; die "kafka3 format failed"; }
    rm -f "$d/format.args"
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$d/kafka.pid" \
        java -Xms128m -Xmx320m -XX:+UseSerialGC -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$d/log4j.properties" \
        -cp "$cp" kafka.Kafka "$d/server.properties" \
        >>"$d/logs/kafka.out" 2>&1 </dev/null &
    disown "$!" 2>/dev/null || true
    local deadline=$((SECONDS + TIMEOUT)) pid=""
    until [[ -n $pid ]] && port_open "$SCRAM3_PORT" &&
        grep -q "Kafka Server started" "$d/logs/kafka.out" 2>/dev/null; do
        pid=$(kafka_pid "$d") || pid=""
        if ((SECONDS >= deadline)); then
            tail -30 "$d/logs/kafka.out" >&2 || true
            kafka_down "$d"
            die "kafka3: not ready after ${TIMEOUT}s"
        fi
        sleep 0.3
    done
    say "kafka 3.9: SASL_SSL (SCRAM-SHA-512) on 127.0.0.1:$SCRAM3_PORT (pid $pid)"
}

case ${1:-} in
    up)
        t0=$SECONDS
        bash "$0" down
        # A failed `up` stops whatever it started (the other broker may still be starting).
        trap '[[ $? -eq 0 ]] || bash "$0" down' EXIT
        mkdir -p "$TLS"
        make_certs
        pg_up
        scram=127.0.0.1:$SASL_PORT
        if need_kafka3; then
            kafka3_classpath
            scram=127.0.0.1:$SCRAM3_PORT
            kafka3_up &
            k3=$!
            kafka_up
            wait "$k3" || die "the Kafka 3.9 broker did not start"
        else
            kafka_up
        fi
        cat >"$TLS/env" <<EOF
PG_PORT=$PG_PORT
PG_SOCKET_DIR=$PG_SOCK
KAFKA_SSL=127.0.0.1:$SSL_PORT
KAFKA_SASL_SSL=127.0.0.1:$SASL_PORT
KAFKA_SCRAM=$scram
CA=$TLS/certs/ca.pem
OTHER_CA=$TLS/certs/other-ca.pem
PG_PASSWORD_FILE=$TLS/secrets/pg_password
KAFKA_PASSWORD_FILE=$TLS/secrets/kafka_password
EOF
        say "up in $((SECONDS - t0))s; settings in $TLS/env"
        ;;
    down)
        kafka_down "$KAFKA3_DIR"
        kafka_down
        pg_down
        rm -rf -- "$TLS"
        ;;
    classpath)
        if need_kafka3; then kafka3_classpath; fi
        ;;
    *)
        sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
