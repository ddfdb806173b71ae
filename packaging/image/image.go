// Package image builds attestation's OCI image without a container
// engine, as ko does: the static attestationd and attestation (make
// static) on a base of a few files taken from Debian's packages (the iPXE
// binaries network boot serves, the CA certificates), run by a user that
// is not root, with the data directory a volume and the API on port 9000.
//
// Every file has the same time and the layers list their files sorted, so
// the same binaries and packages give the same image digest.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/attestation/attestation/internal/debian"
)

const (
	// UID and GID run the daemon (distroless's nonroot).
	UID, GID = 65532, 65532
	// DataDir is the data directory, a volume.
	DataDir = "/var/lib/attestation"
	// Port is the API's.
	Port = "9000/tcp"
	// Entrypoint is the daemon.
	Entrypoint = "/usr/bin/attestationd"
)

// binaries are what the image runs, from Options.Bin.
var binaries = []string{"attestationd", "attestation"}

// fromDebian is what the image takes from Debian's packages: the iPXE
// binaries the daemon serves for network boot (ipxe_dir's default) and the
// packages' copyright files. The CA certificates are bundled apart.
var fromDebian = []struct {
	pkg   string
	files []string
}{
	{"ipxe", []string{"usr/lib/ipxe/undionly.kpxe", "usr/lib/ipxe/snponly.efi", "usr/lib/ipxe/ipxe.efi", "usr/share/doc/ipxe/copyright"}},
	{"ca-certificates", []string{"usr/share/doc/ca-certificates/copyright"}},
}

// caBundle is where Go looks for the CA certificates first on Linux.
const caBundle = "etc/ssl/certs/ca-certificates.crt"

// Options say what to build the image from.
type Options struct {
	// Bin is the directory of the static attestationd and attestation.
	Bin string
	// Version labels the image (org.opencontainers.image.version).
	Version string
	// Time is every file's modification time and the image's creation
	// time (zero: the Unix epoch, as ko does).
	Time time.Time
	// Log receives progress; nil: discarded.
	Log io.Writer
}

// Build assembles the image: a base layer of the files from Debian and
// the users, directories and CA bundle, and a layer of the binaries.
func Build(ctx context.Context, o Options) (v1.Image, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Time.IsZero() {
		o.Time = time.Unix(0, 0)
	}
	o.Time = o.Time.UTC()
	app := newLayer(o.Time)
	for _, name := range binaries {
		p := filepath.Join(o.Bin, name)
		if err := static(p); err != nil {
			return nil, err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		app.file("usr/bin/"+name, b, 0o755, 0, 0)
	}
	base, pkgs, err := baseLayer(ctx, o)
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, l := range []struct {
		files *layer
		what  string
	}{
		{base, "base: " + strings.Join(pkgs, ", ") + " from Debian, users, CA certificates"},
		{app, "attestationd and attestation (static)"},
	} {
		layer, err := l.files.layer()
		if err != nil {
			return nil, err
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:     layer,
			MediaType: types.OCILayer,
			History:   v1.History{Created: v1.Time{Time: o.Time}, CreatedBy: "attestation-image: " + l.what},
		})
		if err != nil {
			return nil, fmt.Errorf("add a layer: %w", err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goarch(filepath.Join(o.Bin, binaries[0]))
	cf.Created = v1.Time{Time: o.Time}
	cf.Config = v1.Config{
		User:         fmt.Sprintf("%d:%d", UID, GID),
		Entrypoint:   []string{Entrypoint},
		Env:          []string{"PATH=/usr/bin", "ATTESTATION_DATA_DIR=" + DataDir},
		WorkingDir:   DataDir,
		ExposedPorts: map[string]struct{}{Port: {}},
		Volumes:      map[string]struct{}{DataDir: {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "attestationd",
			"org.opencontainers.image.description": "attestation control plane: network boot, TPM attestation, approval, one-time configs",
			"org.opencontainers.image.source":      "https://github.com/attestation/attestation",
			"org.opencontainers.image.version":     o.Version,
			"org.opencontainers.image.created":     o.Time.Format(time.RFC3339),
			"io.attestation.debian-packages":       strings.Join(pkgs, " "),
		},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set the image's config: %w", err)
	}
	return img, nil
}

// baseLayer fetches the Debian packages and lays out the base: the files
// taken from them, the CA bundle, the users and the directories. It
// returns the packages as name=version.
func baseLayer(ctx context.Context, o Options) (*layer, []string, error) {
	work, err := os.MkdirTemp("", "attestation-image-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(work)
	l := newLayer(o.Time)
	var pkgs []string
	for _, d := range fromDebian {
		fmt.Fprintf(o.Log, "apt-get download %s\n", d.pkg)
		deb, err := debian.Download(ctx, work, d.pkg)
		if err != nil {
			return nil, nil, err
		}
		out, err := exec.CommandContext(ctx, "dpkg-deb", "--field", deb, "Version").Output()
		if err != nil {
			return nil, nil, fmt.Errorf("dpkg-deb --field %s Version: %w", deb, err)
		}
		pkgs = append(pkgs, d.pkg+"="+strings.TrimSpace(string(out)))
		root := filepath.Join(work, d.pkg)
		if err := debian.Extract(ctx, deb, root); err != nil {
			return nil, nil, err
		}
		for _, f := range d.files {
			b, err := readIn(root, f)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", d.pkg, err)
			}
			l.file(f, b, 0o644, 0, 0)
		}
		if d.pkg == "ca-certificates" {
			// What update-ca-certificates makes of the package at install.
			certs, _ := filepath.Glob(filepath.Join(root, "usr/share/ca-certificates/*/*.crt"))
			if len(certs) == 0 {
				return nil, nil, errors.New("ca-certificates holds no usr/share/ca-certificates/*/*.crt")
			}
			sort.Strings(certs)
			var bundle bytes.Buffer
			for _, c := range certs {
				b, err := os.ReadFile(c)
				if err != nil {
					return nil, nil, err
				}
				bundle.Write(bytes.TrimSpace(b))
				bundle.WriteByte('\n')
			}
			l.file(caBundle, bundle.Bytes(), 0o644, 0, 0)
		}
	}
	l.file("etc/passwd", []byte(fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, GID)), 0o644, 0, 0)
	l.file("etc/group", []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", GID)), 0o644, 0, 0)
	l.file("etc/nsswitch.conf", []byte("hosts: files dns\n"), 0o644, 0, 0)
	l.dir("tmp", 0o1777, 0, 0)
	l.dir("root", 0o700, 0, 0)
	l.dir("home/nonroot", 0o700, UID, GID)
	l.dir(strings.TrimPrefix(DataDir, "/"), 0o700, UID, GID)
	return l, pkgs, nil
}

// readIn reads the file name in the tree root, following symbolic links
// inside the tree (iPXE's ipxe.efi links to /boot/ipxe.efi).
func readIn(root, name string) ([]byte, error) {
	for range 8 {
		p := filepath.Join(root, filepath.FromSlash(name))
		fi, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return os.ReadFile(p)
		}
		target, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		if path.IsAbs(target) {
			name = strings.TrimPrefix(path.Clean(target), "/")
		} else {
			name = path.Join(path.Dir(name), target)
		}
	}
	return nil, fmt.Errorf("%s: too many symbolic links", name)
}

// static fails unless the program at p is an ELF file without a dynamic
// loader: the image has no libc.
func static(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w (make static builds the binaries)", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is linked dynamically: the image has no libc (make static builds it statically)", p)
		}
	}
	return nil
}

// goarch is the image architecture of the program at p.
func goarch(p string) string {
	f, err := elf.Open(p)
	if err != nil {
		return "amd64"
	}
	defer f.Close()
	if f.Machine == elf.EM_AARCH64 {
		return "arm64"
	}
	return "amd64"
}

// layer is a layer's files, written as a tar sorted by path with every
// parent directory, all at one time.
type layer struct {
	time    time.Time
	entries map[string]*tar.Header
	data    map[string][]byte
}

func newLayer(t time.Time) *layer {
	return &layer{time: t, entries: map[string]*tar.Header{}, data: map[string][]byte{}}
}

func (l *layer) file(name string, b []byte, mode int64, uid, gid int) {
	l.parents(name)
	l.entries[name] = &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(b)), Mode: mode, Uid: uid, Gid: gid, ModTime: l.time}
	l.data[name] = b
}

func (l *layer) dir(name string, mode int64, uid, gid int) {
	l.parents(name)
	l.entries[name+"/"] = &tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: gid, ModTime: l.time}
}

// parents adds the directories above name that are not there yet, root's
// and 0755.
func (l *layer) parents(name string) {
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := l.entries[d+"/"]; !ok {
			l.entries[d+"/"] = &tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: l.time}
		}
	}
}

func (l *layer) layer() (v1.Layer, error) {
	names := make([]string, 0, len(l.entries))
	for n := range l.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		if err := tw.WriteHeader(l.entries[n]); err != nil {
			return nil, err
		}
		if _, err := tw.Write(l.data[n]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// Write writes img, named ref (like attestationd:v1.2.0), as an OCI image
// layout in the directory layoutDir (replacing an earlier one) and, when
// tarPath is not empty, as a tarball docker load and podman load read.
func Write(img v1.Image, ref, layoutDir, tarPath string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image name %q: %w", ref, err)
	}
	if _, err := os.Stat(filepath.Join(layoutDir, "oci-layout")); err == nil {
		if err := os.RemoveAll(layoutDir); err != nil {
			return err
		}
	} else if entries, _ := os.ReadDir(layoutDir); len(entries) > 0 {
		return fmt.Errorf("%s is not empty and holds no OCI layout: not replacing it", layoutDir)
	}
	p, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		return fmt.Errorf("write the OCI layout %s: %w", layoutDir, err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag.TagStr()})); err != nil {
		return fmt.Errorf("write the OCI layout %s: %w", layoutDir, err)
	}
	if tarPath != "" {
		if err := tarball.WriteToFile(tarPath, tag, img); err != nil {
			return fmt.Errorf("write the tarball %s: %w", tarPath, err)
		}
	}
	return nil
}
