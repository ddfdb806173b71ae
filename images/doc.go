// Package images builds what machines boot. Its packages: initramfs (the
// agent's reproducible initramfs, with kernel modules and their
// dependencies) and bootassets (Debian's kernel and that initramfs, as
// network boot serves them). Per-schematic bootable ISOs are to come.
package images
