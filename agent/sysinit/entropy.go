package sysinit

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RandomReady reports whether the kernel's random number generator is
// initialised, that is whether getrandom (and so Go's crypto/rand, TLS,
// DHCP transaction IDs, TPM sessions) would not block. Early in boot on a
// CPU without RDRAND (QEMU's default under TCG, some older machines) it
// can take minutes to be.
func RandomReady() bool {
	var b [1]byte
	_, err := unix.Getrandom(b[:], unix.GRND_NONBLOCK)
	return err == nil
}

// AddEntropy mixes seed into the kernel's pool and credits it in full
// (RNDADDENTROPY): for bytes from a hardware RNG such as the TPM's. It
// needs CAP_SYS_ADMIN.
func AddEntropy(seed []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("add entropy: %w", err)
	}
	defer f.Close()
	req := entropyRequest(seed)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&req[0])))
	if errno != 0 {
		return fmt.Errorf("add entropy: %w", errno)
	}
	return nil
}

// entropyRequest lays out struct rand_pool_info: the entropy credited in
// bits, the buffer's size in bytes, then the buffer.
func entropyRequest(seed []byte) []byte {
	req := make([]byte, 8+len(seed))
	binary.NativeEndian.PutUint32(req[0:], uint32(len(seed)*8))
	binary.NativeEndian.PutUint32(req[4:], uint32(len(seed)))
	copy(req[8:], seed)
	return req
}
