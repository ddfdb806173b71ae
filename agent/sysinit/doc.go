// Package sysinit does what the agent must do itself when it is the first
// process of a network-booted initramfs (PID 1, /init): mount the kernel's
// filesystems, attach the console, load the network drivers it is told to
// (those of the devices the machine has, by their modaliases),
// read its settings from the kernel command line, and power the machine off
// when there is nothing left to try.
//
// The parsers (Parse for /proc/cmdline, ParseModules for the module list)
// are pure functions; each system call sits behind one small function.
package sysinit
