#!/usr/bin/env bash
# `sam local invoke|start-api|start-lambda` of the built template against the AWS endpoint on
# this machine: the embedded stack (`make stack ARGS="--host 0.0.0.0"`) or LocalStack.
#
#   scripts/sam-local.sh invoke ScoringFunction -e events/api-health.json
#   scripts/sam-local.sh invoke DriftFunction -e events/sqs-s3-put-incoming.json
#   scripts/sam-local.sh start-api            # http://127.0.0.1:3000
#
# It adds `--config-env local` (samconfig.toml: events/env.local.json, no image pulls), the
# endpoint as the template's LocalEndpointUrl, and, on Linux, host.docker.internal as the
# engine's bridge gateway: Docker Desktop has that name built in, Docker Engine and podman
# don't, and SAM never puts function containers on the host's network. The endpoint must
# therefore listen beyond 127.0.0.1 (the stack's --host 0.0.0.0; LocalStack does by default).
# ENDPOINT_PORT (default 4566) names its port.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SAM="${SAM:-$REPO_ROOT/.tools/sam/bin/sam}"
[ $# -ge 1 ] || { echo "usage: $0 invoke|start-api|start-lambda [sam local options]" >&2; exit 2; }
# podman's Docker API when scripts/container-engine.sh runs it; a Docker engine otherwise.
eval "$("$REPO_ROOT/scripts/container-engine.sh" env)"
export SAM_CLI_TELEMETRY="${SAM_CLI_TELEMETRY:-0}"

local_args=(--config-env local --parameter-overrides "LocalEndpointUrl=http://host.docker.internal:${ENDPOINT_PORT:-4566}")
if [ "$(uname -s)" = Linux ]; then
    gateway="$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}' 2>/dev/null || true)"
    [ -n "$gateway" ] || { echo "$0: no Docker engine answers (scripts/container-engine.sh up)" >&2; exit 1; }
    local_args+=(--add-host "host.docker.internal:${gateway%%/*}")
fi
subcommand="$1"
shift
cd "$REPO_ROOT"
exec "$SAM" local "$subcommand" "$@" "${local_args[@]}"
