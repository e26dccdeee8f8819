#!/usr/bin/env bash
# LocalStack on the host, without Docker: its runtime from PyPI (requirements-localstack.txt)
# in its own virtual environment, for running the tests against it (issue #6).
#
#   scripts/localstack.sh setup          # .tools/localstack (Python 3.13); skipped when current
#   scripts/localstack.sh start          # background, on 127.0.0.1:${LOCALSTACK_PORT:-4566}
#   scripts/localstack.sh stop
#   scripts/localstack.sh test [ARGS]    # setup, start, pytest, stop; exits with pytest's
#                                        # code. ARGS go to pytest; without a test path in
#                                        # them, tests/integration and tests/e2e run
#
# LocalStack's Docker image needs an account token; this runtime does not. Its free edition
# lacks some services the tests use (ECR and SageMaker; DynamoDB needs a Java and a DynamoDB
# Local download that fail offline): tests/conftest.py finds out which and says what it does.
# State (LocalStack's file system root, log, pid) lives under .stack/localstack/.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.tools/localstack"
REQUIREMENTS="$REPO_ROOT/requirements-localstack.txt"
# Holds the hash of the requirements it was built from, so that setup redoes a changed one.
STAMP="$VENV/.installed-stamp"
STATE_DIR="$REPO_ROOT/.stack/localstack"
PID_FILE="$STATE_DIR/localstack.pid"
LOG_FILE="$STATE_DIR/localstack.log"
PORT="${LOCALSTACK_PORT:-4566}"
ENDPOINT="http://127.0.0.1:$PORT"
HEALTH_URL="$ENDPOINT/_localstack/health"
START_TIMEOUT_S="${LOCALSTACK_START_TIMEOUT_S:-60}"
STOP_TIMEOUT_S="${LOCALSTACK_STOP_TIMEOUT_S:-20}"
PROJECT_PYTHON="$REPO_ROOT/.venv/bin/python"
DEFAULT_TESTS=(tests/integration tests/e2e)

log() { echo "localstack.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Python 3.13: LOCALSTACK_PYTHON if set, else python3.13 on PATH, else pyenv's newest 3.13.
# Each is run once: a pyenv shim is on PATH even where its version is not selected, and fails.
find_python() {
    local candidate
    for candidate in "${LOCALSTACK_PYTHON:-}" python3.13 \
        "$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 2>/dev/null | sort -V | tail -n 1)"; do
        if [[ -n "$candidate" ]] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
            command -v "$candidate"
            return
        fi
    done
    die "no working Python 3.13 (LocalStack 2026.3 needs 3.12+, and its pins were found on 3.13): set LOCALSTACK_PYTHON"
}

requirements_hash() { sha256sum "$REQUIREMENTS" | cut -d' ' -f1; }

cmd_setup() {
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(requirements_hash)" ]]; then
        log "setup: $VENV is current"
        return
    fi
    local python
    python="$(find_python)"
    log "setup: creating $VENV with $python"
    # From scratch: a venv left half-built by an interrupted install is not trusted.
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet -r "$REQUIREMENTS"
    requirements_hash >"$STAMP"
}

running_pid() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(cat "$PID_FILE")"
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

healthy() { curl --silent --fail --max-time 2 "$HEALTH_URL" >/dev/null 2>&1; }

# Prints "started" when this call started LocalStack, "running" when it already ran, so that
# `test` stops only what it started.
cmd_start() {
    [[ -x "$VENV/bin/python" ]] || die "start: no $VENV; run: scripts/localstack.sh setup"
    if running_pid >/dev/null && healthy; then
        log "start: already running on $ENDPOINT (pid $(cat "$PID_FILE"))"
        echo running
        return
    fi
    # Anything listening there (`make stack`'s moto, another LocalStack) would make ours fail
    # to bind, or worse, the tests talk to it: say so instead.
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        die "start: something else listens on 127.0.0.1:$PORT; stop it or set LOCALSTACK_PORT"
    fi
    mkdir -p "$STATE_DIR/root"
    rm -f "$PID_FILE"
    log "start: LocalStack on $ENDPOINT, log $LOG_FILE"
    # OVERRIDE_IN_DOCKER=0: it runs on the host, not in its container (paths, networking).
    # FILESYSTEM_ROOT: its state in the repository's .stack/, not /var/lib/localstack.
    # LOCALSTACK_HOST + SQS_ENDPOINT_STRATEGY=path: the URLs it hands out (queue URLs) name
    #   127.0.0.1, because *.localhost.localstack.cloud needs a DNS that is not here.
    # DISABLE_EVENTS: no analytics calls home; DNS_ADDRESS=0: no DNS server of its own (it
    #   finds no upstream offline); SKIP_SSL_CERT_DOWNLOAD: self-signed, not downloaded.
    # setsid: its own process group, so that stop ends whatever it started, and Ctrl-C in
    #   this terminal does not reach it.
    OVERRIDE_IN_DOCKER=0 \
        FILESYSTEM_ROOT="$STATE_DIR/root" \
        GATEWAY_LISTEN="127.0.0.1:$PORT" \
        LOCALSTACK_HOST="127.0.0.1:$PORT" \
        SQS_ENDPOINT_STRATEGY=path \
        DISABLE_EVENTS=1 \
        DNS_ADDRESS=0 \
        SKIP_SSL_CERT_DOWNLOAD=1 \
        setsid "$VENV/bin/python" -m localstack.runtime.main >"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    local started=$SECONDS
    until healthy; do
        if ! running_pid >/dev/null; then
            log "start: LocalStack exited; the end of $LOG_FILE:"
            tail -n 40 "$LOG_FILE" >&2
            rm -f "$PID_FILE"
            exit 1
        fi
        if ((SECONDS - started >= START_TIMEOUT_S)); then
            log "start: no answer from $HEALTH_URL within $START_TIMEOUT_S s; the end of $LOG_FILE:"
            tail -n 40 "$LOG_FILE" >&2
            cmd_stop
            exit 1
        fi
        sleep 0.2
    done
    log "start: ready in $((SECONDS - started)) s (pid $(cat "$PID_FILE"))"
    echo started
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        log "stop: not running"
        return
    fi
    # The whole group (setsid made pid its leader): the runtime and anything it spawned.
    kill -TERM -- "-$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "stop: still running after $STOP_TIMEOUT_S s; killing"
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
    log "stop: stopped (pid $pid)"
}

cmd_test() {
    [[ -x "$PROJECT_PYTHON" ]] || die "test: no $PROJECT_PYTHON; run: make setup"
    cmd_setup
    local how
    how="$(cmd_start)"
    if [[ "$how" == started ]]; then
        trap cmd_stop EXIT
    fi
    # The default tests unless an argument names a test path (tests/e2e, a file::test).
    local arg tests=("${DEFAULT_TESTS[@]}")
    for arg in "$@"; do
        if [[ -e "$REPO_ROOT/${arg%%::*}" ]]; then
            tests=()
            break
        fi
    done
    local rc=0
    # Dummy credentials, and none of the user's: real ones, a session token or a profile must
    # not reach the emulator, nor AWS by a typo in an endpoint. The key id is 12 digits because
    # LocalStack takes such a key id as the account: 123456789012 is moto's account, the one
    # devstack.cfn writes into ARNs (the S3 -> SQS notifications name their queue by ARN, and
    # LocalStack refuses a queue of another account).
    (cd "$REPO_ROOT" &&
        env -u AWS_SESSION_TOKEN -u AWS_PROFILE \
            AWS_ENDPOINT_URL="$ENDPOINT" \
            AWS_ACCESS_KEY_ID=123456789012 \
            AWS_SECRET_ACCESS_KEY=test \
            AWS_DEFAULT_REGION=us-east-1 \
            "$PROJECT_PYTHON" -m pytest "${tests[@]}" "$@") || rc=$?
    return "$rc"
}

case "${1:-}" in
    setup) cmd_setup ;;
    start) cmd_start >/dev/null ;;
    stop) cmd_stop ;;
    test)
        shift
        cmd_test "$@"
        ;;
    *)
        echo "usage: $0 setup|start|stop|test [pytest args]" >&2
        exit 2
        ;;
esac
