#!/usr/bin/env bash
# The project's test command: static checks, then every package's tests.
# The tests start real swtpm processes; install swtpm, swtpm-tools and
# tpm2-tools first (.ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."
go vet ./...
go test -race -count=1 -timeout 30m ./...
