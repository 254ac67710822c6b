#!/usr/bin/env bash
# The project's test command: static checks, portability and dependency
# checks, then every package's tests.
# The tests start real swtpm processes; install swtpm, swtpm-tools and
# tpm2-tools first (.ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."

# OpenSSH's regress scripts, unmodified, with icn-agent as ssh-agent
# (openssh-tests; agent-pkcs11 needs softhsm2). ICN_REGRESS=none skips them.
# They spend most of their time waiting (key lifetimes, sshd, ssh) and use
# their own directories and port (4242, below the ephemeral ports the Go
# tests get), so they run in the background, alongside everything below;
# their report follows the Go tests'. Job control gives them a process
# group of their own, ended if this script stops early.
regress_pid=
if [ "${ICN_REGRESS:-all}" != none ]; then
	regress_log=$(mktemp)
	set -m
	./scripts/regress.sh agent agent-subprocess agent-timeout sshsig hostkey-agent agent-pkcs11 agent-restrict >"$regress_log" 2>&1 &
	regress_pid=$!
	set +m
	trap 'kill -- -"$regress_pid" 2>/dev/null; rm -f "$regress_log"' EXIT
fi

go vet ./...

# What other programs import builds everywhere, without cgo: the client,
# the verifier and the examples that use them.
for goos in darwin windows; do
	GOOS=$goos CGO_ENABLED=0 go build ./attest/ ./agentsrv/client/ ./examples/...
done
# Everything builds without cgo on linux too (the agent then lacks --tpm sim).
CGO_ENABLED=0 go build ./...

# Library packages never link the reference simulator (cgo, libcrypto):
# only commands (cmd/) and tests import internal/tpmsim.
libs=$(go list ./... | grep -v -e /cmd/ -e /internal/tpmsim$)
if bad=$(go list -f '{{.ImportPath}} {{join .Deps " "}}' $libs | grep -E ' (github.com/icn/icn-agent/internal/tpmsim|github.com/google/go-tpm-tools/simulator)( |$)'); then
	echo "library packages that link the simulator:" >&2
	echo "$bad" | cut -d' ' -f1 >&2
	exit 1
fi

# The txtar scripts of cmd/icn-agent spend most of their time waiting on
# the processes they start (agents, swtpm, sshd, ssh): more of them at
# once than there are cores keeps the suite well under ten minutes on two.
status=0
go test -race -count=1 -parallel 6 -timeout 30m ./... || status=$?

if [ -n "$regress_pid" ]; then
	regress_status=0
	wait "$regress_pid" || regress_status=$?
	trap - EXIT
	echo "OpenSSH regress scripts:"
	cat "$regress_log"
	rm -f "$regress_log"
	if [ "$status" -eq 0 ]; then
		status=$regress_status
	fi
fi
exit "$status"
