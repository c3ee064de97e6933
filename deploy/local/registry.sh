#!/usr/bin/env bash
# A local Apicurio Registry 2.4.2.Final (in-memory storage) on 127.0.0.1, for the tests of
# outboxd's [schema_registry]: its Confluent-compatible API is http://127.0.0.1:PORT/apis/ccompat/v7.
#
#   deploy/local/registry.sh build     # build the runnable jar (Maven + Quarkus), cached in .run/
#   deploy/local/registry.sh up        # build if needed, start, wait until it answers
#   deploy/local/registry.sh down | status
#
# Environment:
#   OUTBOXD_REGISTRY_PORT     HTTP port (default 58081)
#   OUTBOXD_STACK_TIMEOUT     seconds to wait for readiness (default 120)
#
# The build recipe is deploy/local/registry/pom.xml plus application.properties; the app's own
# application.properties comes from the apicurio-registry-app jar. The jar is rebuilt only
# when the recipe changes. Everything comes from Maven Central (into ~/.m2).
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd -- "$SCRIPT_DIR/../.." && pwd -P)
DIR="$REPO/.run/registry"
BUILD="$DIR/build"
JAR="$BUILD/target/outboxd-local-registry-0-runner.jar"
STAMP="$DIR/recipe.sha256"
PID_FILE="$DIR/registry.pid"
LOG="$DIR/registry.log"
PORT=${OUTBOXD_REGISTRY_PORT:-58081}
TIMEOUT=${OUTBOXD_STACK_TIMEOUT:-120}

say() { printf 'registry: %s\n' "$*" >&2; }
die() { printf 'registry: error: %s\n' "$*" >&2; exit 1; }
[[ $PORT =~ ^[0-9]+$ ]] || die "OUTBOXD_REGISTRY_PORT must be a number, got '$PORT'"

recipe_hash() { cat "$SCRIPT_DIR/registry/pom.xml" "$SCRIPT_DIR/registry/application.properties" | sha256sum | cut -d' ' -f1; }

build() {
    local want; want=$(recipe_hash)
    if [[ -f $JAR && -f $STAMP && $(cat "$STAMP") == "$want" ]]; then return 0; fi
    command -v mvn >/dev/null || die "mvn not found; run scripts/deps.sh"
    mkdir -p "$BUILD/src/main/resources"
    rm -f "$STAMP"
    cp "$SCRIPT_DIR/registry/pom.xml" "$BUILD/pom.xml"
    say "building Apicurio Registry with Maven (first build downloads ~300 MB into ~/.m2; log $DIR/build.log)"
    local start=$SECONDS
    # The app jar must be resolved first: its application.properties heads ours.
    if ! mvn -B -f "$BUILD/pom.xml" dependency:resolve >"$DIR/build.log" 2>&1; then
        tail -n 30 "$DIR/build.log" >&2; die "resolving the registry's dependencies failed"
    fi
    local app_jar="$HOME/.m2/repository/io/apicurio/apicurio-registry-app/2.4.2.Final/apicurio-registry-app-2.4.2.Final.jar"
    { unzip -p "$app_jar" application.properties; echo; cat "$SCRIPT_DIR/registry/application.properties"; } \
        >"$BUILD/src/main/resources/application.properties" || die "cannot read application.properties from $app_jar"
    # On the command line: the app's application.properties names another package type.
    if ! mvn -B -f "$BUILD/pom.xml" package -DskipTests -Dquarkus.package.type=uber-jar >>"$DIR/build.log" 2>&1; then
        tail -n 30 "$DIR/build.log" >&2; die "building the registry failed"
    fi
    [[ -f $JAR ]] || die "the build left no $JAR"
    echo "$want" >"$STAMP"
    say "built $JAR in $((SECONDS - start)) s"
}

pid() {
    [[ -f $PID_FILE ]] || return 1
    local p; p=$(cat "$PID_FILE")
    kill -0 "$p" 2>/dev/null || return 1
    echo "$p"
}

answers() { curl -fsS -m 2 "http://127.0.0.1:$PORT/apis/ccompat/v7/subjects" >/dev/null 2>&1; }

up() {
    build
    if pid >/dev/null; then say "already running (pid $(pid))"; return 0; fi
    say "starting on 127.0.0.1:$PORT"
    nohup java -Xmx384m -Dquarkus.http.port="$PORT" -jar "$JAR" >"$LOG" 2>&1 &
    echo $! >"$PID_FILE"
    local deadline=$((SECONDS + TIMEOUT))
    until answers; do
        pid >/dev/null || { tail -n 30 "$LOG" >&2; die "the registry exited while starting (log $LOG)"; }
        ((SECONDS < deadline)) || { tail -n 30 "$LOG" >&2; die "the registry did not answer within $TIMEOUT s"; }
        sleep 0.5
    done
    say "ready: http://127.0.0.1:$PORT/apis/ccompat/v7"
}

down() {
    local p
    p=$(pid) || { rm -f "$PID_FILE"; return 0; }
    kill "$p"
    local deadline=$((SECONDS + 30))
    while kill -0 "$p" 2>/dev/null; do
        ((SECONDS < deadline)) || { kill -9 "$p"; break; }
        sleep 0.2
    done
    rm -f "$PID_FILE"
    say "stopped"
}

case ${1:-} in
    build) build ;;
    up) up ;;
    down) down ;;
    status) if p=$(pid); then echo "registry: running (pid $p) on 127.0.0.1:$PORT"; else echo "registry: stopped"; exit 1; fi ;;
    *) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
