// Package images will build what machines boot: the reproducible
// initramfs with the static agent and the per-schematic bootable ISO.
package images
