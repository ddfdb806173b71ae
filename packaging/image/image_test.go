package image_test

import (
	"archive/tar"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/attestation/attestation/internal/proctest"
	"github.com/attestation/attestation/internal/testenv"
	"github.com/attestation/attestation/packaging/image"
)

const version = "v1.2.3-4-gabcdef0"

// TestImage runs make image, reads the image back from the OCI layout and
// from the tarball (the same image, named for docker load), checks its
// config, unpacks its file system and runs the daemon there as the image
// would: chrooted, as its user, with its environment, the data directory
// its volume.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the static binaries and the image")
	}
	testenv.Integration(t, "make image: the OCI image read back, its config checked, the daemon run from its file system as its user")
	for _, tool := range []struct{ name, pkg string }{{"make", "make"}, {"apt-get", "apt"}, {"dpkg-deb", "dpkg"}} {
		testenv.LookPath(t, tool.name, tool.pkg)
	}
	testenv.Root(t, "running the daemon chrooted into the image's file system")
	tmp := t.TempDir()
	dist := filepath.Join(tmp, "dist")
	cmd := exec.Command("make", "--no-print-directory", "image", "BIN="+filepath.Join(tmp, "bin"), "DIST="+dist, "VERSION="+version)
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}

	idx, err := layout.ImageIndexFromPath(filepath.Join(dist, "image"))
	if err != nil {
		t.Fatalf("read the OCI layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].MediaType != types.OCIManifestSchema1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != version {
		t.Fatalf("the layout's index: %+v, want one OCI manifest named %s", im.Manifests, version)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dist, "attestation-image.tar")
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(tarPath) })
	if err != nil {
		t.Fatalf("read the tarball's manifest.json: %v", err)
	}
	if len(m) != 1 || len(m[0].RepoTags) != 1 || m[0].RepoTags[0] != "attestationd:"+version {
		t.Errorf("the tarball's manifest.json: %+v, want one image tagged attestationd:%s", m, version)
	}
	fromTar, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		t.Fatalf("read the tarball: %v", err)
	}
	want, _ := img.ConfigName()
	if got, err := fromTar.ConfigName(); err != nil || got != want {
		t.Errorf("the tarball's image config %s (%v), the layout's %s: want the same image", got, err, want)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	for _, check := range []struct {
		what      string
		got, want any
	}{
		{"os/arch", cf.OS + "/" + cf.Architecture, "linux/amd64"},
		{"user", c.User, "65532:65532"},
		{"entrypoint", strings.Join(c.Entrypoint, " "), "/usr/bin/attestationd"},
		{"working dir", c.WorkingDir, image.DataDir},
		{"volumes", len(c.Volumes), 1},
		{"exposed ports", len(c.ExposedPorts), 1},
		{"version label", c.Labels["org.opencontainers.image.version"], version},
	} {
		if check.got != check.want {
			t.Errorf("%s: %v, want %v", check.what, check.got, check.want)
		}
	}
	if _, ok := c.Volumes[image.DataDir]; !ok {
		t.Errorf("volumes %v, want %s", c.Volumes, image.DataDir)
	}
	if _, ok := c.ExposedPorts["9000/tcp"]; !ok {
		t.Errorf("exposed ports %v, want 9000/tcp", c.ExposedPorts)
	}
	if !strings.Contains(c.Labels["io.attestation.debian-packages"], "ipxe=") {
		t.Errorf("labels %v: want the Debian packages and their versions", c.Labels)
	}

	rootfs := filepath.Join(tmp, "rootfs")
	unpack(t, img, rootfs)
	for _, f := range []string{"usr/lib/ipxe/undionly.kpxe", "usr/lib/ipxe/snponly.efi", "usr/lib/ipxe/ipxe.efi"} {
		if fi, err := os.Stat(filepath.Join(rootfs, f)); err != nil || fi.Size() < 10000 {
			t.Errorf("/%s: %v, want iPXE's binary", f, err)
		}
	}
	pem, err := os.ReadFile(filepath.Join(rootfs, "etc/ssl/certs/ca-certificates.crt"))
	if pool := x509.NewCertPool(); err != nil || !pool.AppendCertsFromPEM(pem) || strings.Count(string(pem), "BEGIN CERTIFICATE") < 50 {
		t.Errorf("/etc/ssl/certs/ca-certificates.crt: %v, want Debian's CA certificates", err)
	}

	// The programs as the container runtime would start them: chrooted,
	// as the image's user, with its environment.
	var uid, gid uint32 = image.UID, image.GID
	inImage := func(dir string, env []string, name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: rootfs, Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		cmd.Dir = dir
		cmd.Env = append(slices.Clone(c.Env), env...)
		return cmd
	}
	addr := proctest.FreeAddr(t)
	url := proctest.Start(t, inImage(c.WorkingDir, []string{"ATTESTATION_LISTEN=" + addr}, c.Entrypoint[0], c.Entrypoint[1:]...), addr)
	db, err := os.Stat(filepath.Join(rootfs, image.DataDir, "attestation.db"))
	if err != nil {
		t.Fatalf("no database in the volume: %v", err)
	}
	if st := db.Sys().(*syscall.Stat_t); st.Uid != uid {
		t.Errorf("the database belongs to uid %d, want the image's user %d", st.Uid, uid)
	}
	token, err := os.ReadFile(filepath.Join(rootfs, image.DataDir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"ATTESTATION_API_URL=" + url, "ATTESTATION_TOKEN=" + strings.TrimSpace(string(token))}
	if out, err := inImage("/", env, "/usr/bin/attestation", "extensions", "list").CombinedOutput(); err != nil || !strings.Contains(string(out), "webhook") {
		t.Errorf("attestation extensions list in the image: %v\n%s", err, out)
	}
	if out, err := inImage("/", nil, "/usr/bin/attestationd", "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "attestationd "+version+"\n") {
		t.Errorf("attestationd --version in the image: %v\n%s", err, out)
	}
}

// unpack writes the image's flattened file system into dir, with its
// owners and modes (the layers hold directories and regular files only).
func unpack(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("read the image's file system: %v", err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("the image holds %q, outside its root", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, 0o600)
			}
		default:
			t.Fatalf("the image holds %s of type %q; want directories and files", h.Name, h.Typeflag)
		}
		if err == nil {
			err = os.Chown(p, h.Uid, h.Gid)
		}
		if err == nil {
			err = os.Chmod(p, h.FileInfo().Mode())
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
