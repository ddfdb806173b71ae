// Package fat12 provides utilities to interact with, manipulate and create a FAT12 filesystem
// on a block device or disk image. It also exports the shared BPB types and the FATTable
// interface used by the fat16 package.
//
// References:
//
//	https://en.wikipedia.org/wiki/Design_of_the_FAT_file_system
//	https://www.cs.fsu.edu/~cop4610t/assignments/project3/spec/fatspec.pdf
//	https://wiki.osdev.org/FAT
package fat12
