#!/usr/bin/env bash
# Compare how fast icn-agent and OpenSSH's ssh-agent sign with the same
# Ed25519 key: builds icn-agent and agentbench, seals a fresh key with the
# development simulator TPM (--tpm sim; the seed is unsealed once, in the
# warm-up, then cached), loads the same key into ssh-agent, and signs N
# times (64 bytes) over 1 and over 8 connections against each.
#
#   scripts/bench.sh [N]       N signatures per agent and connection count (default 10000)
#
# Everything lives in a temporary directory (HOME, XDG dirs, sockets) that
# is removed on exit, with both agents.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-10000}
tmp=$(mktemp -d /tmp/icn-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench: building into $tmp" >&2
go build -o "$tmp/icn-agent" ./cmd/icn-agent
go build -o "$tmp/agentbench" ./internal/cmd/agentbench

export HOME=$tmp/home
export XDG_DATA_HOME=$HOME/.local/share XDG_STATE_HOME=$HOME/.local/state
export XDG_CONFIG_HOME=$HOME/.config XDG_RUNTIME_DIR=$tmp/run
unset ICN_AGENT_TPM SSH_ASKPASS SSH_AUTH_SOCK
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"

ssh-keygen -q -t ed25519 -N '' -C bench@example -f "$tmp/key"
"$tmp/icn-agent" import bench "$tmp/key" --tpm sim >/dev/null

icn_sock=$tmp/icn.sock
ssh_sock=$tmp/ssh.sock
"$tmp/icn-agent" serve --tpm sim -a "$icn_sock" >"$tmp/icn.out" 2>"$tmp/icn.log" &
pids+=($!)
ssh-agent -D -a "$ssh_sock" >"$tmp/ssh.out" 2>&1 &
pids+=($!)

wait_sock() {
  for _ in $(seq 100); do
    [ -S "$1" ] && return 0
    sleep 0.1
  done
  echo "bench: no socket at $1 after 10 s" >&2
  cat "$tmp/icn.log" "$tmp/ssh.out" >&2
  exit 1
}
wait_sock "$icn_sock"
wait_sock "$ssh_sock"
SSH_AUTH_SOCK=$ssh_sock ssh-add -q "$tmp/key"

# Warm both (icn-agent unseals the seed on the first signature) and check
# that each holds the key.
SSH_AUTH_SOCK=$icn_sock ssh-add -T "$tmp/key.pub"
SSH_AUTH_SOCK=$ssh_sock ssh-add -T "$tmp/key.pub"

echo "bench: $n signatures of 64 bytes per agent and connection count; $(nproc) CPUs; $(ssh -V 2>&1)" >&2
"$tmp/agentbench" -sock "icn-agent=$icn_sock" -sock "ssh-agent=$ssh_sock" \
  -key "$tmp/key.pub" -n "$n" -c 1,8 -warmup 500

# icn-agent unsealed exactly once
unseals=$(grep -c 'unsealed identity' "$tmp/icn.log" || true)
if [ "$unseals" != 1 ]; then
  echo "bench: icn-agent unsealed $unseals times, want 1" >&2
  cat "$tmp/icn.log" >&2
  exit 1
fi
