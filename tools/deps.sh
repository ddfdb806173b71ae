#!/usr/bin/env bash
# Installs the Debian packages a make target needs, when missing.
#
#   tools/deps.sh build   gcc and the C headers cgo links against (required)
#   tools/deps.sh test    what the integration tests use (swtpm, QEMU, a
#                         kernel, iPXE, OVMF, DHCP and TFTP clients, perfdhcp,
#                         xorriso, systemd-analyze, PostgreSQL)
#   tools/deps.sh bench   the reference servers and load generators of make bench
#                         (and atftpd, extracted beside tftpd-hpa: see below)
#
# A package is installed only when what it provides is missing. As root
# apt-get runs directly, otherwise through sudo. For build a failure stops
# the caller; for test and bench each package is tried alone after a failed
# batch, and the ones that could not be installed are named (the tests
# that need them skip locally and fail under CI=true).
#
# DEPS_ROOT prefixes every file checked (tests point it at an empty dir).
set -uo pipefail

# want lists "check package" pairs: a check is cmd:NAME (a command on PATH)
# or a file path (a glob: any match will do).
want() {
	case "$1" in
	build)
		echo "cmd:gcc gcc"
		echo "/usr/include/stdio.h libc6-dev"
		echo "/usr/include/openssl/evp.h libssl-dev"
		;;
	test)
		echo "cmd:swtpm swtpm"
		echo "cmd:swtpm_setup swtpm-tools"
		echo "cmd:qemu-system-x86_64 qemu-system-x86"
		echo "/usr/lib/ipxe/qemu/pxe-e1000.rom ipxe-qemu"
		echo "/boot/vmlinuz-* linux-image-amd64"
		echo "/usr/lib/ipxe/undionly.kpxe ipxe"
		echo "/usr/share/OVMF/OVMF_CODE_4M.fd ovmf"
		echo "cmd:ip iproute2"
		echo "cmd:curl curl"
		echo "cmd:dhclient isc-dhcp-client"
		echo "cmd:busybox busybox"
		echo "cmd:perfdhcp kea-admin"
		echo "cmd:tftp tftp-hpa"
		echo "cmd:atftp atftp"
		echo "cmd:xorriso xorriso"
		echo "cmd:systemd-analyze systemd"
		echo "/usr/lib/postgresql/*/bin/initdb postgresql"
		;;
	bench)
		echo "cmd:wrk wrk"
		echo "cmd:nginx nginx-light"
		echo "cmd:kea-dhcp4 kea-dhcp4-server"
		echo "cmd:dnsmasq dnsmasq-base"
		echo "cmd:in.tftpd tftpd-hpa"
		;;
	*)
		echo "usage: $0 build|test|bench" >&2
		return 2
		;;
	esac
}

present() {
	local check=$1
	if [[ $check == cmd:* ]]; then
		command -v "${check#cmd:}" >/dev/null
		return
	fi
	local f
	for f in ${DEPS_ROOT:-}$check; do
		[[ -e $f ]] && return 0
	done
	return 1
}

main() {
	local list
	list=$(want "$1") || exit 2
	local missing=() check pkg
	while read -r check pkg; do
		present "$check" || missing+=("$pkg")
	done <<<"$list"
	[[ ${#missing[@]} -eq 0 ]] && return 0

	# Root runs apt-get itself; anyone else goes through sudo. env sets the
	# variable in both cases (after an expansion, VAR=value is a command).
	local run=()
	[[ $(id -u) == 0 ]] || run=(sudo)
	run+=(env DEBIAN_FRONTEND=noninteractive apt-get)

	echo "installing Debian packages for $1: ${missing[*]}"
	if [[ $1 == build ]]; then
		"${run[@]}" update -qq && "${run[@]}" install -y -qq --no-install-recommends "${missing[@]}" && return 0
		echo "could not install ${missing[*]}: cgo (SQLite, the TPM simulator) cannot build without them" >&2
		return 1
	fi
	"${run[@]}" update -qq || echo "apt-get update failed; trying the package lists at hand" >&2
	"${run[@]}" install -y -qq --no-install-recommends "${missing[@]}" && return 0
	local failed=()
	for pkg in "${missing[@]}"; do
		"${run[@]}" install -y -qq --no-install-recommends "$pkg" || failed+=("$pkg")
	done
	if [[ ${#failed[@]} -gt 0 ]]; then
		echo "could not install ${failed[*]}: the tests that need them skip (and fail under CI=true)" >&2
	fi
	return 0
}

# atftpd, the windowsize reference of make bench, conflicts with tftpd-hpa,
# the lockstep one: it is extracted from its package into ATFTPD_DIR
# (boot/tftp's benchmark looks there), not installed.
ATFTPD_DIR=/usr/local/lib/attestation-bench/atftpd

extract_atftpd() {
	command -v atftpd >/dev/null && return 0
	[[ -x ${DEPS_ROOT:-}$ATFTPD_DIR/usr/sbin/atftpd ]] && return 0
	local run=() tmp
	[[ $(id -u) == 0 ]] || run=(sudo)
	tmp=$(mktemp -d) || return 0
	echo "extracting atftpd (it conflicts with tftpd-hpa) into $ATFTPD_DIR"
	if ! (cd "$tmp" && apt-get download -qq atftpd 2>/dev/null) ||
		! "${run[@]}" mkdir -p "$ATFTPD_DIR" || ! "${run[@]}" dpkg -x "$tmp"/atftpd_*.deb "$ATFTPD_DIR"; then
		echo "could not extract atftpd: the windowsize figures show this server alone" >&2
	fi
	rm -rf "$tmp"
}

main "$@"
status=$?
[[ ${1:-} == bench ]] && extract_atftpd
exit $status
