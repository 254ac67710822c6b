#!/usr/bin/env bash
# Set up and run icn-agent on the embedded development TPM (--tpm sim).
#
# Builds bin/icn-agent, creates an identity named "default" if the store has
# none, and serves it in the foreground. Use the printed SSH_AUTH_SOCK line
# in another shell. The simulator is an INSECURE development TPM: its seed
# is a file in $XDG_STATE_HOME/icn-agent; blobs sealed with it survive
# restarts. Pass other serve flags after the script name, e.g. -v.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/include/openssl/evp.h ] || need+=(libssl-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "dev-agent: the simulator TPM needs ${need[*]}: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
fi

mkdir -p bin
go build -o bin/icn-agent ./cmd/icn-agent
if ! bin/icn-agent list --tpm sim --json 2>/dev/null | grep -q '"name"'; then
  bin/icn-agent keygen default --tpm sim
fi
bin/icn-agent list --tpm sim
exec bin/icn-agent serve --tpm sim "$@"
