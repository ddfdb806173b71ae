// Package cache builds each schematic's images, once, and serves them
// under /images/{schematic_id}/: the kernel (vmlinuz), the initramfs
// (initramfs), an iPXE script booting them (ipxe), and a bootable ISO of
// the same kernel, initramfs and command line (attestation.iso), so that
// network boot and ISO boot run the same bytes.
//
// Images are built on first request (or by Get), from the boot assets
// (package bootassets) and the schematic: the agent's initramfs as it is,
// or with an overlay appended holding the schematic's extra modules, files
// and CA. Concurrent requests for one image build it once. A build is
// written into a temporary directory, fsynced and renamed into place, so
// that nothing half-written is ever served; it is kept by schematic ID and
// a fingerprint of the boot assets, so that new boot assets give new
// images.
package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/attestation/attestation/boot"
	"github.com/attestation/attestation/boot/ipxe"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/images/bootassets"
	"github.com/attestation/attestation/images/initramfs"
	"github.com/attestation/attestation/images/iso"
	"github.com/attestation/attestation/images/schematic"
)

// The files of an image, as served under /images/{id}/.
const (
	KernelFile = "vmlinuz"
	InitrdFile = "initramfs"
	IPXEFile   = "ipxe"
	ISOFile    = "attestation.iso"
)

// Path is the URL path images are served under.
const Path = "/images/"

// files are the served files and their content types.
var files = map[string]string{
	KernelFile: "application/octet-stream",
	InitrdFile: "application/octet-stream",
	IPXEFile:   "text/plain; charset=utf-8",
	ISOFile:    "application/x-iso9660-image",
}

// version changes when what a build makes changes, so that images built
// by an older daemon are built again.
const version = "1"

// buildTimeout bounds a build, which no single request may cancel.
const buildTimeout = 10 * time.Minute

// ErrUnknownSchematic: no schematic has that ID.
var ErrUnknownSchematic = errors.New("unknown schematic")

// Options configure a Cache.
type Options struct {
	// Dir holds the built images (DATA_DIR/images).
	Dir string
	// Assets is the boot assets directory.
	Assets string
	// PublicURL is the daemon's URL as machines reach it, without a
	// trailing slash: the base of the images' URLs and the agent's
	// attestation.url unless the schematic names another.
	PublicURL string
	// Schematic returns a stored schematic's document, or an error
	// wrapping ErrUnknownSchematic.
	Schematic func(ctx context.Context, id string) ([]byte, error)
	// Created records node.image_created, about machineID when the image
	// was built for a machine ("" otherwise). Nil: no event.
	Created func(ctx context.Context, machineID string, ev *events.ImageCreated) error
	Logger  *slog.Logger
}

// Image is a built image.
type Image struct {
	SchematicID string `json:"schematic_id"`
	// Assets fingerprints the boot assets it was built from.
	Assets string `json:"assets"`
	// Files are the served files by name.
	Files map[string]File `json:"files"`
	// Built is when it was built, and BuildTime how long it took.
	Built     time.Time     `json:"built"`
	BuildTime time.Duration `json:"build_time"`
	// Fresh says it was built for this call, or for a concurrent one
	// this call waited for (not in the JSON).
	Fresh bool `json:"-"`
	dir   string
}

// File is one file of an image.
type File struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Cache builds and serves images.
type Cache struct {
	o     Options
	log   *slog.Logger
	group singleflight.Group

	mu         sync.Mutex
	schematics map[string]*schematic.Schematic // immutable: content-addressed
	images     map[string]*Image               // by ID/fingerprint
}

// New returns a Cache.
func New(o Options) *Cache {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o.PublicURL = strings.TrimRight(o.PublicURL, "/")
	return &Cache{o: o, log: log, schematics: map[string]*schematic.Schematic{}, images: map[string]*Image{}}
}

// URL is the URL of one of a schematic's image files.
func (c *Cache) URL(id, file string) string { return c.o.PublicURL + Path + id + "/" + file }

// ISOURL is the URL of a schematic's ISO.
func (c *Cache) ISOURL(id string) string { return c.URL(id, ISOFile) }

// Cmdline is the kernel command line a schematic's image boots with: the
// agent's settings, then the schematic's kernel arguments.
func Cmdline(s *schematic.Schematic, publicURL string) []string {
	u := s.Agent.URL
	if u == "" {
		u = publicURL
	}
	args := []string{"attestation.url=" + u}
	if s.Agent.TPM == "required" {
		args = append(args, "attestation.require_tpm=1")
	}
	return append(args, s.KernelArgs...)
}

// schematic returns the parsed schematic id, from memory after the first
// time: a schematic never changes under its ID.
func (c *Cache) schematic(ctx context.Context, id string) (*schematic.Schematic, error) {
	c.mu.Lock()
	s, ok := c.schematics[id]
	c.mu.Unlock()
	if ok {
		return s, nil
	}
	if c.o.Schematic == nil {
		return nil, fmt.Errorf("schematic %s: %w", id, ErrUnknownSchematic)
	}
	doc, err := c.o.Schematic(ctx, id)
	if err != nil {
		return nil, err
	}
	if s, err = schematic.Parse(doc); err != nil {
		return nil, fmt.Errorf("stored schematic %s: %w", id, err)
	}
	if s.ID() != id {
		return nil, fmt.Errorf("stored schematic %s has ID %s: the store is corrupt", id, s.ID())
	}
	c.mu.Lock()
	c.schematics[id] = s
	c.mu.Unlock()
	return s, nil
}

// Check reports whether the image of s can be built with the boot assets
// as they are: its modules exist in their kernel. Without boot assets it
// cannot tell, and says nothing.
func (c *Cache) Check(s *schematic.Schematic) error {
	a, err := bootassets.Open(c.o.Assets)
	if err != nil {
		return nil
	}
	idx, err := a.Index()
	if err != nil {
		return nil
	}
	for i, m := range s.Modules {
		if _, err := idx.Resolve(m); err != nil {
			return &schematic.Error{Field: fmt.Sprintf("modules[%d]", i),
				Err: fmt.Errorf("%q: not a module of the boot assets' kernel %s", m, a.Release)}
		}
	}
	return nil
}

// Boot is how a provisioned machine with schematic id network-boots its
// image, for boot.Policy.Image: only when the schematic says boot:
// network, and only on x86-64 (the boot assets' architecture).
func (c *Cache) Boot(id string, arch boot.Arch) (boot.Image, bool) {
	if arch != boot.ArchUnknown && arch != boot.ArchBIOS && arch != boot.ArchX8664EFI {
		return boot.Image{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.schematic(ctx, id)
	if err != nil {
		c.log.Warn("boot decision: no image for the machine's schematic: it boots from its disk", "schematic", id, "err", err)
		return boot.Image{}, false
	}
	if s.Boot != schematic.BootNetwork {
		return boot.Image{}, false
	}
	return boot.Image{
		Kernel:  c.URL(id, KernelFile),
		Initrd:  c.URL(id, InitrdFile),
		Cmdline: strings.Join(Cmdline(s, c.o.PublicURL), " "),
	}, true
}

// fingerprint identifies the boot assets an image is built from: their
// manifest and the size and modification time of each file used.
func fingerprint(a *bootassets.Assets) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "version %s\n", version)
	b, err := os.ReadFile(a.Path(bootassets.ManifestFile))
	if err != nil {
		return "", err
	}
	h.Write(b)
	for _, name := range []string{bootassets.Kernel, bootassets.Initrd, bootassets.ISOLinux, bootassets.LDLinux, bootassets.GRUBEFI, bootassets.KernelDeb} {
		fi, err := os.Stat(a.Path(name))
		if err != nil {
			return "", fmt.Errorf("boot assets: %w", err)
		}
		fmt.Fprintf(h, "%s %d %d\n", name, fi.Size(), fi.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Get returns schematic id's image, building it first when it is not
// built from the current boot assets; machineID (may be "") is the
// machine it is built for, for node.image_created. Concurrent calls for
// one image share one build, which ctx ending does not stop.
func (c *Cache) Get(ctx context.Context, id, machineID string) (*Image, error) {
	if !schematic.ValidID(id) {
		return nil, fmt.Errorf("%q is not a schematic ID: %w", id, ErrUnknownSchematic)
	}
	a, err := bootassets.Open(c.o.Assets)
	if err != nil {
		return nil, err
	}
	fp, err := fingerprint(a)
	if err != nil {
		return nil, err
	}
	key := id + "/" + fp
	c.mu.Lock()
	img, ok := c.images[key]
	c.mu.Unlock()
	if ok {
		return img, nil
	}
	ch := c.group.DoChan(key, func() (any, error) {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), buildTimeout)
		defer cancel()
		return c.load(bctx, a, id, fp, machineID)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Image), nil
	}
}

// load reads the image from disk, or builds it.
func (c *Cache) load(ctx context.Context, a *bootassets.Assets, id, fp, machineID string) (*Image, error) {
	dir := filepath.Join(c.o.Dir, id, fp)
	img, err := readImage(dir)
	if err != nil {
		if img, err = c.build(ctx, a, id, fp, dir); err != nil {
			if !errors.Is(err, ErrUnknownSchematic) {
				c.log.Error("image build failed", "schematic", id, "err", err)
			}
			return nil, fmt.Errorf("build the image of schematic %s: %w", id, err)
		}
		if c.o.Created != nil {
			ev := &events.ImageCreated{SchematicID: id, ISOURL: c.ISOURL(id), SHA256: img.Files[ISOFile].SHA256, Size: img.Files[ISOFile].Size}
			if err := c.o.Created(ctx, machineID, ev); err != nil {
				c.log.Error("node.image_created not recorded", "schematic", id, "err", err)
			}
		}
	}
	kept := *img
	kept.Fresh = false
	c.mu.Lock()
	c.images[id+"/"+fp] = &kept
	c.mu.Unlock()
	return img, nil
}

// readImage reads a built image's manifest, or fails.
func readImage(dir string) (*Image, error) {
	b, err := os.ReadFile(filepath.Join(dir, "image.json"))
	if err != nil {
		return nil, err
	}
	img := &Image{}
	if err := json.Unmarshal(b, img); err != nil {
		return nil, err
	}
	for name := range files {
		if _, ok := img.Files[name]; !ok {
			return nil, fmt.Errorf("%s: no %s", dir, name)
		}
	}
	img.dir = dir
	return img, nil
}

// build makes the image in a temporary directory and renames it to dir.
func (c *Cache) build(ctx context.Context, a *bootassets.Assets, id, fp, dir string) (*Image, error) {
	start := time.Now()
	s, err := c.schematic(ctx, id)
	if err != nil {
		return nil, err
	}
	c.log.Info("building image", "schematic", id, "kernel", a.Release)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return nil, err
	}

	kernel, err := os.ReadFile(a.Path(bootassets.Kernel))
	if err != nil {
		return nil, fmt.Errorf("boot assets: %w", err)
	}
	initrd, err := c.initramfs(ctx, a, s, filepath.Join(tmp, "modules"))
	if err != nil {
		return nil, err
	}
	args := Cmdline(s, c.o.PublicURL)
	script := ipxe.Script(boot.Decision{
		Action: boot.BootImage, Reason: "image of schematic " + id,
		Kernel: c.URL(id, KernelFile), Initrd: c.URL(id, InitrdFile), Cmdline: strings.Join(args, " "),
	}, boot.Client{})
	for name, b := range map[string][]byte{KernelFile: kernel, InitrdFile: initrd, IPXEFile: script} {
		if err := writeSynced(filepath.Join(out, name), b); err != nil {
			return nil, err
		}
	}
	work := filepath.Join(tmp, "iso")
	if err := os.Mkdir(work, 0o755); err != nil {
		return nil, err
	}
	err = iso.Write(filepath.Join(out, ISOFile), work, iso.Spec{
		Kernel: filepath.Join(out, KernelFile), Initrd: filepath.Join(out, InitrdFile), Args: args,
		ISOLinux: a.Path(bootassets.ISOLinux), LDLinux: a.Path(bootassets.LDLinux), GRUBEFI: a.Path(bootassets.GRUBEFI),
		Label: "ATTESTATION_" + strings.ToUpper(id[:16]),
	})
	if err != nil {
		return nil, err
	}
	img := &Image{SchematicID: id, Assets: fp, Files: map[string]File{}, Built: time.Now().UTC()}
	for name := range files {
		f, err := hashFile(filepath.Join(out, name))
		if err != nil {
			return nil, err
		}
		img.Files[name] = f
	}
	img.BuildTime = time.Since(start)
	manifest, err := json.MarshalIndent(img, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeSynced(filepath.Join(out, "image.json"), append(manifest, '\n')); err != nil {
		return nil, err
	}
	if err := syncDir(out); err != nil {
		return nil, err
	}
	if err := os.Rename(out, dir); err != nil {
		return nil, fmt.Errorf("put the image in place: %w", err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	c.removeStale(id, fp)
	img.dir, img.Fresh = dir, true
	c.log.Info("image built", "schematic", id, "iso_bytes", img.Files[ISOFile].Size,
		"initramfs_bytes", img.Files[InitrdFile].Size, "iso_sha256", img.Files[ISOFile].SHA256,
		"duration", img.BuildTime.Round(time.Millisecond))
	return img, nil
}

// initramfs is the agent's initramfs from the boot assets, with an overlay
// appended when the schematic adds modules, files or a CA.
func (c *Cache) initramfs(ctx context.Context, a *bootassets.Assets, s *schematic.Schematic, work string) ([]byte, error) {
	base, err := os.ReadFile(a.Path(bootassets.Initrd))
	if err != nil {
		return nil, fmt.Errorf("boot assets: %w", err)
	}
	if len(s.Modules) == 0 && len(s.Files) == 0 && s.Agent.CA == "" {
		return base, nil
	}
	spec := initramfs.Spec{Overlay: true, Files: map[string]initramfs.File{}}
	if len(s.Modules) > 0 {
		spec.Modules = append(append([]string(nil), a.Modules...), s.Modules...)
		spec.Have = a.ModulesResolved
		if spec.Kernel, err = a.ModuleTree(ctx, work, spec.Have, spec.Modules...); err != nil {
			return nil, err
		}
	}
	for _, f := range s.Files {
		mode := os.FileMode(0o644)
		if f.Mode != "" {
			m, _ := strconv.ParseUint(f.Mode, 8, 32)
			mode = os.FileMode(m)
		}
		spec.Files[f.Path] = initramfs.File{Data: []byte(f.Content), Mode: mode}
	}
	if s.Agent.CA != "" {
		spec.Files[strings.TrimPrefix(caFile, "/")] = initramfs.File{Data: []byte(s.Agent.CA), Mode: 0o644}
	}
	var b bytes.Buffer
	b.Write(base)
	// The kernel takes archives on 4-byte boundaries; zeros between
	// them are skipped.
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	if err := initramfs.Write(&b, spec); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// caFile is where the agent looks for its CA bundle (agent.DefaultCAFile).
const caFile = "/etc/attestation/ca.pem"

// removeStale removes the images of id built from other boot assets, and
// builds left by a crash. A file being served from them stays readable
// until it is closed.
func (c *Cache) removeStale(id, fp string) {
	entries, err := os.ReadDir(filepath.Join(c.o.Dir, id))
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Name() == fp {
			continue
		}
		if strings.HasPrefix(e.Name(), ".build-") {
			// Another build's, unless older than any build can be.
			if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < buildTimeout {
				continue
			}
		}
		if err := os.RemoveAll(filepath.Join(c.o.Dir, id, e.Name())); err != nil {
			c.log.Warn("remove a stale image", "dir", filepath.Join(c.o.Dir, id, e.Name()), "err", err)
		}
	}
	c.mu.Lock()
	for k := range c.images {
		if strings.HasPrefix(k, id+"/") && k != id+"/"+fp {
			delete(c.images, k)
		}
	}
	c.mu.Unlock()
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func hashFile(path string) (File, error) {
	f, err := os.Open(path)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return File{}, err
	}
	return File{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// ServeHTTP serves GET and HEAD /images/{id}/{file}, building the image
// first when needed, with Range, ETag (the file's SHA-256) and
// conditional requests.
func (c *Cache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, Path)
	id, name, ok2 := strings.Cut(rest, "/")
	ctype, known := files[name]
	if !ok || !ok2 || !known || !schematic.ValidID(id) {
		http.Error(w, "not found: want "+Path+"{schematic_id}/{vmlinuz,initramfs,ipxe,attestation.iso}", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: images are read with GET or HEAD", http.StatusMethodNotAllowed)
		return
	}
	img, err := c.Get(r.Context(), id, "")
	switch {
	case errors.Is(err, ErrUnknownSchematic):
		http.Error(w, "no schematic "+id, http.StatusNotFound)
		return
	case errors.Is(err, bootassets.ErrNotBuilt):
		http.Error(w, "this daemon has no boot assets to build images from; its operator must build them", http.StatusServiceUnavailable)
		return
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return
	case err != nil:
		http.Error(w, "building the image of schematic "+id+" failed; the daemon's log says why", http.StatusInternalServerError)
		return
	}
	f, err := os.Open(filepath.Join(img.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		// Replaced by a build from newer boot assets since Get: ask again.
		c.mu.Lock()
		delete(c.images, id+"/"+img.Assets)
		c.mu.Unlock()
		http.Error(w, "the image is being rebuilt; try again", http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		c.log.Error("open an image file", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("ETag", `"`+img.Files[name].SHA256+`"`)
	// The same URL gets new bytes when the boot assets change: caches
	// must ask, and the ETag makes asking cheap.
	h.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, img.Built, f)
}
