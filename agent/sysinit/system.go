package sysinit

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// A mount is one filesystem the agent needs.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// mounts are mounted in order: /sys before the securityfs inside it (for
// the TPM event log), /dev for the TPM device and the console, /run for the
// config the agent writes.
var mounts = []mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"securityfs", "/sys/kernel/security", "securityfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
}

// MountAll mounts the kernel filesystems. One that is already mounted is
// fine; one that fails is reported but does not stop the others (a kernel
// without securityfs still attests, only without an event log).
func MountAll() error {
	var errs []error
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("mount %s: %w", m.target, err))
			continue
		}
		err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		if err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err))
		}
	}
	return errors.Join(errs...)
}

// AttachConsole makes /dev/console the standard input, output and error
// when the kernel could not (an initramfs without a /dev/console node
// starts init with no open descriptors). Call it after MountAll.
func AttachConsole() error {
	if _, err := unix.FcntlInt(1, unix.F_GETFD, 0); err == nil {
		return nil
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open /dev/console: %w", err)
	}
	for i := range 3 {
		if fd != i {
			if err := unix.Dup3(fd, i, 0); err != nil {
				return fmt.Errorf("attach console: %w", err)
			}
		}
	}
	if fd > 2 {
		unix.Close(fd)
	}
	return nil
}

// PowerOff syncs and powers the machine off. It returns only on failure.
func PowerOff() error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("power off: %w", err)
	}
	return nil
}

// Halt is what PID 1 does when it has given up: PID 1 must never exit (the
// kernel panics), so it powers the machine off after delay, and if even
// that fails it sleeps forever.
func Halt(delay time.Duration) {
	time.Sleep(delay)
	_ = PowerOff()
	for {
		time.Sleep(time.Hour)
	}
}
