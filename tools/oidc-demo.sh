#!/usr/bin/env bash
# The operator login without Keycloak: a development OIDC provider
# (attestation-oidc-dev: alice is an operator, bob a viewer, root an admin)
# and attestationd trusting it, in the foreground until Ctrl-C. Log in from
# another terminal with the command it prints.
#
#   OIDC_LISTEN  the provider's address (default 127.0.0.1:9400)
#   LISTEN       the daemon's (default :9000), DATA_DIR its data (./var)
#   BIN          where the binaries are (default bin; make run-oidc-demo
#                builds attestationd and attestation there first)
#   ATTESTATIOND_FLAGS  more flags for the daemon, e.g. --ek-policy any
set -euo pipefail
cd "$(dirname "$0")/.."

oidc=${OIDC_LISTEN:-127.0.0.1:9400}
listen=${LISTEN:-:9000}
data=${DATA_DIR:-./var}
bin=${BIN:-bin}
issuer=http://$oidc

go build -o "$bin/" ./internal/oidcdev/cmd/attestation-oidc-dev
"$bin/attestation-oidc-dev" --listen "$oidc" &
provider=$!
trap 'kill $provider 2>/dev/null || true; wait 2>/dev/null || true' EXIT

# The daemon would wait for an issuer that is not up yet; start it when
# the provider answers.
host=${oidc%:*} port=${oidc##*:}
for ((i = 0; i < 100; i++)); do
	if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then break; fi
	kill -0 "$provider" 2>/dev/null || { echo "oidc-demo: the provider did not start" >&2; exit 1; }
	sleep 0.1
done

cat <<MSG

In another terminal, log in as one of its users and use the CLI:

  $bin/attestation auth login --issuer $issuer
  (open the link it prints, pick alice, bob or root, approve)
  $bin/attestation auth status
  $bin/attestation machines list
  $bin/attestation audit list

MSG
# shellcheck disable=SC2086 # ATTESTATIOND_FLAGS is a list of words
"$bin/attestationd" --listen "$listen" --data-dir "$data" --oidc-issuer "$issuer" --oidc-audience attestation ${ATTESTATIOND_FLAGS:-} &
daemon=$!
trap 'kill $daemon $provider 2>/dev/null || true; wait 2>/dev/null || true' EXIT
wait "$daemon"
