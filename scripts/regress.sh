#!/usr/bin/env bash
# OpenSSH's own regress scripts, unmodified, with icn-agent standing in
# for ssh-agent (through a link named ssh-agent). Needs Debian's
# openssh-tests package (.ci/run installs it).
#
# usage: scripts/regress.sh [SCRIPT...]
# (default: agent agent-timeout agent-subprocess sshsig hostkey-agent
# agent-pkcs11 agent-restrict; agent-pkcs11 skips itself without softhsm2)
#
# Prints each script's result and duration, then "N passed, N failed";
# exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

runner=/usr/lib/openssh/regress/run-tests
if [ ! -x "$runner" ]; then
	echo "regress: $runner not found: install openssh-tests" >&2
	exit 2
fi
scripts=("$@")
if [ ${#scripts[@]} -eq 0 ]; then
	scripts=(agent agent-timeout agent-subprocess sshsig hostkey-agent agent-pkcs11 agent-restrict)
fi

# hostkey-agent.sh fails if its directory's path contains "hostkey": keep
# script names out of the paths.
work=$(mktemp -d /tmp/icnregress.XXXXXXXX)
trap 'rm -rf "$work"' EXIT
go build -o "$work/bin/icn-agent" ./cmd/icn-agent || exit 2
ln -s icn-agent "$work/bin/ssh-agent"
agent="$work/bin/ssh-agent"
# As root there is no sudo to call (and none is needed).
sudo=sudo
if [ "$(id -u)" = 0 ]; then sudo=; fi

passed=0
failed=0
i=0
for t in "${scripts[@]}"; do
	i=$((i + 1))
	dir="$work/run$i"
	mkdir -p "$dir"
	start=$(date +%s)
	if "$runner" "$dir" t-exec LTESTS="$t" SUDO="$sudo" TEST_SSH_SSHAGENT="$agent" >"$work/log$i" 2>&1; then
		result=pass
	else
		result=FAIL
	fi
	# agent-subprocess.sh passes even if the agent never starts: check
	# that COMMAND reaches the agent and that the agent ends with it.
	if [ "$t" = agent-subprocess ] && [ "$result" = pass ]; then
		out=$("$agent" sh -c 'ssh-add -l >/dev/null 2>&1; echo "$? $SSH_AGENT_PID"' 2>>"$work/log$i")
		rc=${out%% *}
		pid=${out##* }
		# The agent is not our child (it is the child of the process
		# we ran), and the CI image has no tool that waits for another
		# process's exit (pidfd): poll, for at most 5 s.
		n=50
		while kill -0 "$pid" 2>/dev/null && [ $n -gt 0 ]; do
			n=$((n - 1))
			sleep 0.1
		done
		if [ "$rc" != 1 ] || [ $n -eq 0 ]; then
			echo "regress: agent-subprocess: ssh-add -l under COMMAND exited $rc (want 1: no identities), agent pid $pid still running: $([ $n -eq 0 ] && echo yes || echo no)" >>"$work/log$i"
			result=FAIL
		fi
	fi
	secs=$(($(date +%s) - start))
	echo "$result $t (${secs}s)"
	if [ "$result" = pass ]; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		sed 's/^/    /' "$work/log$i" | tail -n 40
	fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
