#!/usr/bin/env bash
# One enrollment, start to end, on this machine: a daemon in a scratch data
# directory, an agent proving itself with a TPM, an operator approving it,
# the agent fetching its one-time config, and the event log. Each step
# prints the command it runs, so it can be repeated by hand.
#
#   tools/demo.sh            # the TPM simulator in the agent; --ek-policy any
#   tools/demo.sh swtpm      # swtpm with an EK certificate from its own CA;
#                            # --ek-policy verify --ek-roots (the real check)
#
# DEMO_PORT (default 9100) is the daemon's port on 127.0.0.1 (swtpm takes
# the next two), DEMO_BIN (default bin) where the binaries go. Everything
# else it writes goes under one directory in TMPDIR (default /tmp) that it
# names at the end; nothing else on the machine changes.
set -euo pipefail
cd "$(dirname "$0")/.."

tpm=${1:-simulator}
port=${DEMO_PORT:-9100}
url=http://127.0.0.1:$port
bin=${DEMO_BIN:-bin}
dir=$(mktemp -d "${TMPDIR:-/tmp}/attestation-demo.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() {
	printf '$ %s\n' "$*"
	"$@"
}
fail() {
	echo "demo: $*" >&2
	for log in "$dir"/*.log; do
		[[ -s $log ]] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
	done
	exit 1
}
# wait_for WHAT SECONDS COMMAND...: run COMMAND until it succeeds.
wait_for() {
	local what=$1 secs=$2
	shift 2
	for ((i = 0; i < secs * 10; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	fail "$what did not happen within ${secs}s"
}

case $tpm in
simulator | swtpm) ;;
*)
	echo "usage: tools/demo.sh [simulator|swtpm]" >&2
	exit 2
	;;
esac
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
	echo "demo: 127.0.0.1:$port is taken; set DEMO_PORT to a free port" >&2
	exit 1
fi

step "Build the daemon, the CLI, and an agent with the TPM simulator built in (cgo)"
run go build -o "$bin/" ./controlplane/cmd/attestationd ./cli/cmd/attestation
run go build -o "$bin/attestation-agent-dev" ./agent/cmd/attestation-agent

ekflags=(--ek-policy any)
tpmspec=simulator
if [[ $tpm == swtpm ]]; then
	for tool in swtpm swtpm_setup swtpm_localca; do
		command -v "$tool" >/dev/null || fail "$tool is missing: install swtpm and swtpm-tools (make test-deps)"
	done
	step "Make a software TPM with an EK certificate signed by its own CA (swtpm_setup), and serve it (swtpm)"
	mkdir -p "$dir/swtpm-ca" "$dir/swtpm-state" "$dir/ek-roots"
	cat >"$dir/swtpm-localca.conf" <<EOF
statedir=$dir/swtpm-ca
signingkey=$dir/swtpm-ca/signkey.pem
issuercert=$dir/swtpm-ca/issuercert.pem
certserial=$dir/swtpm-ca/certserial
EOF
	printf -- '--platform-manufacturer Demo\n--platform-version 2.1\n--platform-model Demo\n' >"$dir/swtpm-localca.options"
	cat >"$dir/swtpm_setup.conf" <<EOF
create_certs_tool=/usr/bin/swtpm_localca
create_certs_tool_config=$dir/swtpm-localca.conf
create_certs_tool_options=$dir/swtpm-localca.options
EOF
	run swtpm_setup --tpm2 --config "$dir/swtpm_setup.conf" --tpmstate "$dir/swtpm-state" \
		--create-ek-cert --create-platform-cert --lock-nvram --overwrite >"$dir/swtpm_setup.log" 2>&1 ||
		fail "swtpm_setup failed"
	tport=$((port + 1))
	printf '$ swtpm socket --tpm2 --tpmstate dir=%s --server type=tcp,port=%d,bindaddr=127.0.0.1 --ctrl type=tcp,port=%d,bindaddr=127.0.0.1 --flags not-need-init,startup-clear &\n' \
		"$dir/swtpm-state" "$tport" "$((tport + 1))"
	swtpm socket --tpm2 --tpmstate "dir=$dir/swtpm-state" \
		--server "type=tcp,port=$tport,bindaddr=127.0.0.1" --ctrl "type=tcp,port=$((tport + 1)),bindaddr=127.0.0.1" \
		--flags not-need-init,startup-clear >"$dir/swtpm.log" 2>&1 &
	pids+=($!)
	# The daemon trusts EKs whose certificate chains to these roots.
	cp "$dir/swtpm-ca/swtpm-localca-rootca-cert.pem" "$dir/swtpm-ca/issuercert.pem" "$dir/ek-roots/"
	ekflags=(--ek-policy verify --ek-roots "$dir/ek-roots")
	tpmspec=tcp://127.0.0.1:$tport
fi

step "Start the daemon (logs in $dir/attestationd.log)"
printf '$ bin/attestationd --listen 127.0.0.1:%s --data-dir %s %s &\n' "$port" "$dir/var" "${ekflags[*]}"
"$bin/attestationd" --listen "127.0.0.1:$port" --data-dir "$dir/var" "${ekflags[@]}" >"$dir/attestationd.log" 2>&1 &
pids+=($!)
healthz() {
	exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
	printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3
	local status
	read -r -t 2 status <&3 || status=""
	exec 3<&-
	[[ $status == "HTTP/1."?" 200"* ]]
}
wait_for "the daemon answering /healthz" 30 healthz
export ATTESTATION_API_URL=$url
ATTESTATION_TOKEN=$(cat "$dir/var/admin-token")
export ATTESTATION_TOKEN
echo "ATTESTATION_API_URL=$url ATTESTATION_TOKEN=\$(cat $dir/var/admin-token)"

step "Give the role demo a config template"
template='hostname: {{.Hostname}}
role: {{.Role}}
ek_fingerprint: {{.EKFingerprint}}'
printf '$ %s/attestation configs set demo - <<EOF\n%s\nEOF\n' "$bin" "$template"
echo "$template" | "$bin/attestation" configs set demo -

step "Boot the agent: it registers its EK and AK, activates the credential, quotes its PCRs (logs in $dir/agent.log)"
printf '$ bin/attestation-agent-dev --server %s --tpm %s --config-out %s --once &\n' "$url" "$tpmspec" "$dir/config.yaml"
"$bin/attestation-agent-dev" --server "$url" --tpm "$tpmspec" --config-out "$dir/config.yaml" --once >"$dir/agent.log" 2>&1 &
agent=$!
pids+=($agent)
attested() { "$bin/attestation" machines list --state attested -o json | grep -q '"id"'; }
wait_for "the machine attesting" 60 attested
run "$bin/attestation" machines list
id=$("$bin/attestation" machines list --state attested -o json | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' | head -n 1)

step "Approve it: it gets a role, a hostname and a one-time config URL"
run "$bin/attestation" machines approve "$id" --role demo --hostname demo-1

step "The agent fetches its config once and exits"
wait "$agent" || fail "the agent failed"
run cat "$dir/config.yaml"
grep -E 'msg="?(registered|attested|waiting for approval|approved|config written)' "$dir/agent.log" | sed 's/^/  agent: /' || true

step "The event log"
run "$bin/attestation" events list

echo
echo "Done. Everything is in $dir (rm -rf it when finished)."
