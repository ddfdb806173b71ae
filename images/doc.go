// Package images builds what machines boot. Its packages: schematic
// (parsing and naming schematics), initramfs (the agent's reproducible
// initramfs, with kernel modules and their dependencies, and overlays
// appended to it), bootassets (Debian's kernel, that initramfs and the
// boot loaders, as network boot serves them and images are built from
// them), iso (bootable ISO 9660 images with El Torito entries for BIOS and
// UEFI) and cache (each schematic's kernel, initramfs, iPXE script and
// ISO, built once and served under /images/).
package images
