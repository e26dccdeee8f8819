#!/usr/bin/env bash
# A Docker engine for `sam local`, `sam build` and `docker build` on a machine that has none.
#
#   scripts/container-engine.sh up      # engine + base images; prints the DOCKER_HOST to use
#   scripts/container-engine.sh down    # stops the Docker-API service (images are kept)
#   scripts/container-engine.sh env     # `export DOCKER_HOST=...` when podman's service answers
#                                       # (for eval; prints nothing for a real Docker engine)
#   scripts/container-engine.sh status
#
# Where a Docker engine already answers (Docker Desktop, dockerd, a working DOCKER_HOST),
# `up` does nothing. Otherwise (Debian/Ubuntu, as root) it:
#   1. installs podman from the distribution and configures it for a container-less host
#      (runc, cgroupfs, file events, a subnet clear of a stale cni-podman0 bridge);
#   2. builds offline stand-ins for the two base images the Dockerfiles name, when no registry
#      can be reached: public.ecr.aws/lambda/python:3.11 (AWS's documented "alternative base
#      image": Debian bookworm, whose python3 is 3.11, with AWS's runtime interface client
#      and the runtime interface emulator that the SAM CLI ships) and python:3.11-slim. Both
#      come from one debootstrap root file system; they are rebuilt only when missing or
#      built by an older version of this recipe (BASE_RECIPE below);
#   3. serves the Docker API from podman on a unix socket (default /run/podman/podman.sock).
# Idempotent: each step is skipped when already done.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SOCKET="${PODMAN_SOCKET:-/run/podman/podman.sock}"
STATE_DIR="${CONTAINER_ENGINE_STATE:-$REPO_ROOT/.containers}"
PID_FILE="$STATE_DIR/podman-service.pid"
LOG_FILE="$STATE_DIR/podman-service.log"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Bump when the base image recipe changes: images labelled with an older recipe are rebuilt.
BASE_RECIPE=1
LAMBDA_IMAGE=public.ecr.aws/lambda/python
PYTHON_IMAGE=docker.io/library/python:3.11-slim
# The runtime interface client and the SDK the Lambda python3.11 runtime provides (boto3 is
# what functions/drift relies on: the layer deliberately ships no botocore).
AWSLAMBDARIC_VERSION=4.2.2
BOTO3_VERSION=1.44.8

log() { printf 'container-engine: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

docker_host_url() { printf 'unix://%s' "$SOCKET"; }

# True when something already serves the Docker API at DOCKER_HOST (or Docker's default).
engine_answers() {
    command -v docker >/dev/null 2>&1 && timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

podman_service_answers() {
    [ -S "$SOCKET" ] && curl --silent --fail --max-time 5 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1
}

install_podman() {
    if command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then
        return
    fi
    [ "$(id -u)" = 0 ] || die "installing podman needs root (apt-get); or start a Docker engine yourself"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: install podman (or Docker) with this system's package manager"
    log "installing podman, runc and debootstrap from the distribution"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap curl >/dev/null
}

# Settings that make podman 4.3 work inside a container without systemd: crun and the
# systemd cgroup manager and journald are not available there; the default ulimits fail
# to apply; and a stale, down cni-podman0 bridge may already hold podman's default subnet.
configure_podman() {
    local conf=/etc/containers/containers.conf marker="# written by scripts/container-engine.sh"
    if [ -f "$conf" ] && ! grep -qF "$marker" "$conf"; then
        log "keeping the existing $conf (not written by this script)"
        return
    fi
    mkdir -p /etc/containers
    cat >"$conf" <<EOF
$marker
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
default_subnet = "10.89.0.0/24"
EOF
}

image_recipe() {
    podman image inspect --format '{{index .Labels "fraud-detection.base-recipe"}}' "$1" 2>/dev/null || true
}

base_images_current() {
    [ "$(image_recipe "$LAMBDA_IMAGE:3.11")" = "$BASE_RECIPE" ] && [ "$(image_recipe "$PYTHON_IMAGE")" = "$BASE_RECIPE" ]
}

# The runtime interface emulator that `sam local` itself mounts into function containers.
find_rie() {
    local sam_python
    for sam_python in "$REPO_ROOT/.tools/sam/bin/python" "$(command -v python3 || true)"; do
        [ -x "$sam_python" ] || continue
        "$sam_python" - <<'EOF' 2>/dev/null && return
import pathlib, samcli
print(pathlib.Path(samcli.__file__).parent / "local" / "rapid" / "aws-lambda-rie-x86_64")
EOF
    done
    return 1
}

build_base_images() {
    if base_images_current; then
        log "base images present (recipe $BASE_RECIPE): skipping the build"
        return
    fi
    local rie rootfs
    rie="$(find_rie)" || die "the SAM CLI is not installed (run make setup): its runtime interface emulator is needed"
    [ -f "$rie" ] || die "no runtime interface emulator at $rie"
    rootfs="$(mktemp -d "${TMPDIR:-/tmp}/lambda-rootfs.XXXXXX")"
    # shellcheck disable=SC2064  # expand now: the trap must remove this very folder
    trap "rm -rf '$rootfs'" RETURN
    log "debootstrap bookworm (minbase, python3) into $rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$STATE_DIR/debootstrap.log" 2>&1 \
        || { tail -20 "$STATE_DIR/debootstrap.log" >&2; die "debootstrap failed"; }

    # This machine's extra CAs (an egress proxy's, say) so that pip in the build containers
    # can reach the package index; a machine without any copies nothing.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
    fi
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    # /var/lang is where AWS's image keeps its Python; a venv there gives `python3.11` and pip.
    # The host's pip settings (PIP_FIND_LINKS pointing at a host folder) must not leak in.
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        chroot "$rootfs" sh -c 'python3 -m venv /var/lang && /var/lang/bin/pip install --quiet --upgrade pip' \
        || die "creating the Python environment in the base image failed"
    rm -rf "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/*

    local common_changes=(
        --change "LABEL fraud-detection.base-recipe=$BASE_RECIPE"
        --change "LABEL fraud-detection.stand-in=offline-built by scripts/container-engine.sh"
        --change "ENV LANG=C.UTF-8"
        --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt"
    )
    log "importing $PYTHON_IMAGE"
    tar -C "$rootfs" -c . | podman import --quiet "${common_changes[@]}" \
        --change "ENV PATH=/var/lang/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change 'CMD ["python3"]' - "$PYTHON_IMAGE" >/dev/null

    # Lambda's parts: the runtime interface client, the SDK in /var/runtime, the bootstrap the
    # emulator starts, the entrypoint AWS's images have, and the emulator itself.
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        chroot "$rootfs" sh -c "/var/lang/bin/pip install --quiet awslambdaric==$AWSLAMBDARIC_VERSION \
            && /var/lang/bin/pip install --quiet --target /var/runtime boto3==$BOTO3_VERSION" \
        || die "installing the runtime interface client in the base image failed"
    mkdir -p "$rootfs/var/task" "$rootfs/opt"
    cat >"$rootfs/var/runtime/bootstrap" <<'EOF'
#!/bin/sh
# Lambda's Python search path: function code, layers, then the runtime's own SDK.
export PYTHONPATH="/var/task:/opt/python/lib/python3.11/site-packages:/opt/python:/var/runtime${PYTHONPATH:+:$PYTHONPATH}"
exec /var/lang/bin/python3.11 -m awslambdaric "${_HANDLER:?_HANDLER is not set}"
EOF
    cat >"$rootfs/lambda-entrypoint.sh" <<'EOF'
#!/bin/sh
# As in AWS's base images: the handler is the one argument; outside Lambda (no runtime API)
# the runtime interface emulator serves the invoke endpoint on port 8080.
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"
if [ -z "${AWS_LAMBDA_RUNTIME_API:-}" ]; then
  exec /usr/local/bin/aws-lambda-rie /var/runtime/bootstrap
else
  exec /var/runtime/bootstrap
fi
EOF
    install -m 0755 "$rie" "$rootfs/usr/local/bin/aws-lambda-rie"
    chmod 0755 "$rootfs/var/runtime/bootstrap" "$rootfs/lambda-entrypoint.sh"
    rm -rf "$rootfs/root/.cache"

    log "importing $LAMBDA_IMAGE:3.11"
    tar -C "$rootfs" -c . | podman import --quiet "${common_changes[@]}" \
        --change "ENV PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin" \
        --change "ENV LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib" \
        --change "ENV LAMBDA_TASK_ROOT=/var/task" \
        --change "ENV LAMBDA_RUNTIME_DIR=/var/runtime" \
        --change "ENV TZ=:/etc/localtime" \
        --change "WORKDIR /var/task" \
        --change 'ENTRYPOINT ["/lambda-entrypoint.sh"]' - "$LAMBDA_IMAGE:3.11" >/dev/null
    podman tag "$LAMBDA_IMAGE:3.11" "$LAMBDA_IMAGE:3.11-x86_64"
    log "base images built: $(podman image inspect --format '{{.Size}}' "$LAMBDA_IMAGE:3.11" | numfmt --to=si)B"
}

start_service() {
    if podman_service_answers; then
        log "the Docker API already answers at $SOCKET"
        return
    fi
    mkdir -p "$(dirname "$SOCKET")"
    rm -f "$SOCKET"
    log "starting podman's Docker-API service at $SOCKET (log: $LOG_FILE)"
    # setsid: the service must outlive this script and the shell that ran it. From /: a
    # service left in a checkout that is then deleted fails every container start after that
    # ("write child: broken pipe", seen when CI's clone was replaced).
    (cd / && exec setsid podman system service --time=0 "$(docker_host_url)" >>"$LOG_FILE" 2>&1 </dev/null) &
    echo $! >"$PID_FILE"
    local waited=0
    until podman_service_answers; do
        sleep 0.5
        waited=$((waited + 1))
        [ $waited -lt 60 ] || { tail -20 "$LOG_FILE" >&2; die "podman's service did not answer in 30 s"; }
    done
}

stop_service() {
    if [ -f "$PID_FILE" ]; then
        local pid
        pid="$(cat "$PID_FILE")"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$PID_FILE"
    fi
    rm -f "$SOCKET"
}

cmd_up() {
    if [ "${DOCKER_HOST:-}" != "$(docker_host_url)" ] && engine_answers; then
        log "a Docker engine already answers (${DOCKER_HOST:-default socket}): nothing to do"
        return
    fi
    mkdir -p "$STATE_DIR"
    install_podman
    configure_podman
    build_base_images
    start_service
    log "ready: export DOCKER_HOST=$(docker_host_url)"
    echo "export DOCKER_HOST=$(docker_host_url)"
}

case "${1:-}" in
    up) cmd_up ;;
    down) stop_service; log "stopped" ;;
    env) if podman_service_answers; then echo "export DOCKER_HOST=$(docker_host_url)"; fi ;;
    status)
        if podman_service_answers; then echo "podman Docker API at $SOCKET"
        elif engine_answers; then echo "Docker engine at ${DOCKER_HOST:-default socket}"
        else echo "no engine"; exit 1; fi ;;
    *) echo "usage: $0 up|down|env|status" >&2; exit 2 ;;
esac
