// Package debian fetches Debian packages with apt-get download (no root
// needed, nothing installed) and unpacks them with dpkg-deb, for what is
// built from them: the boot assets and the container image.
package debian

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// Download fetches the package pkg of the machine's apt sources into dir
// and returns the .deb's path.
func Download(ctx context.Context, dir, pkg string) (string, error) {
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", pkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s: %v\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s left %d .deb files, want one", pkg, len(debs))
	}
	return debs[0], nil
}

// Extract unpacks the files of the package deb under root.
func Extract(ctx context.Context, deb, root string) error {
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %v\n%s", deb, err, out)
	}
	return nil
}
