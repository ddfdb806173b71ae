// Package deb is attestation's Debian packaging, built by make deb with
// nfpm: attestation.yaml (the daemon as a systemd service, the CLI, the
// agent) and attestation-cli.yaml (the CLI alone), the unit
// attestationd.service and its network boot drop-in pxe.conf, the default
// settings attestationd.yaml (a conffile), the maintainer scripts and
// version.sh, which makes a Debian version of the build's. The package
// holds no Go code; its test builds the packages, installs them into a
// fresh root and starts the daemon from it.
package deb
