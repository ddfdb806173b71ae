package cache_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/attestation/attestation/boot"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/images/bootassets"
	"github.com/attestation/attestation/images/bootassets/bootassetstest"
	"github.com/attestation/attestation/images/cache"
	"github.com/attestation/attestation/images/initramfs"
	"github.com/attestation/attestation/images/schematic"
)

const release = bootassetstest.Release

func write(t *testing.T, path, s string) { bootassetstest.File(t, path, s) }

// fixture is a Cache over fake assets and an in-memory schematic store,
// counting node.image_created.
type fixture struct {
	*cache.Cache
	dir, assets string
	mu          sync.Mutex
	docs        map[string][]byte
	created     []*events.ImageCreated
	machines    []string
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{dir: filepath.Join(t.TempDir(), "images"), assets: bootassetstest.Write(t), docs: map[string][]byte{}}
	f.Cache = cache.New(cache.Options{
		Dir: f.dir, Assets: f.assets, PublicURL: "http://cp.example:8080/",
		Schematic: func(_ context.Context, id string) ([]byte, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if d, ok := f.docs[id]; ok {
				return d, nil
			}
			return nil, fmt.Errorf("schematic %s: %w", id, cache.ErrUnknownSchematic)
		},
		Created: func(_ context.Context, machineID string, ev *events.ImageCreated) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.created, f.machines = append(f.created, ev), append(f.machines, machineID)
			return nil
		},
	})
	return f
}

// add stores a schematic and returns its ID.
func (f *fixture) add(t *testing.T, doc string) string {
	t.Helper()
	s, err := schematic.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.docs[s.ID()] = s.Canonical()
	f.mu.Unlock()
	return s.ID()
}

func (f *fixture) events() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.created)
}

// TestConcurrentRequestsBuildOnce: 50 concurrent GETs of one unbuilt ISO
// all get the same bytes, from one build, which records one event.
func TestConcurrentRequestsBuildOnce(t *testing.T) {
	f := newFixture(t)
	id := f.add(t, "kernel_args: [console=ttyS0]\n")
	srv := httptest.NewServer(f.Cache)
	defer srv.Close()
	const n = 50
	var (
		wg     sync.WaitGroup
		bodies [n][]byte
		codes  [n]int
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(srv.URL + "/images/" + id + "/attestation.iso")
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			codes[i] = resp.StatusCode
			bodies[i], _ = io.ReadAll(resp.Body)
		}()
	}
	wg.Wait()
	for i := range n {
		if codes[i] != http.StatusOK || !bytes.Equal(bodies[i], bodies[0]) || len(bodies[0]) < 100<<10 {
			t.Fatalf("request %d: %d, %d bytes; want 200 and the same ISO as the first", i, codes[i], len(bodies[i]))
		}
	}
	if got := f.events(); got != 1 {
		t.Errorf("%d node.image_created events, want 1 build", got)
	}
	ev := f.created[0]
	if ev.SchematicID != id || ev.ISOURL != "http://cp.example:8080/images/"+id+"/attestation.iso" || ev.Size != int64(len(bodies[0])) || f.machines[0] != "" {
		t.Errorf("event %+v for machine %q", ev, f.machines[0])
	}
	// Built once, on disk once, no temporary left.
	entries, _ := os.ReadDir(filepath.Join(f.dir, id))
	if len(entries) != 1 || strings.HasPrefix(entries[0].Name(), ".") {
		t.Errorf("image directory holds %v, want one build", entries)
	}
	// Another Cache over the same directory (a restarted daemon) serves
	// it without building it again.
	again := cache.New(cache.Options{Dir: f.dir, Assets: f.assets, PublicURL: "http://cp.example:8080",
		Schematic: func(context.Context, string) ([]byte, error) { return nil, errors.New("not asked") }})
	img, err := again.Get(t.Context(), id, "")
	if err != nil || img.Fresh {
		t.Fatalf("after a restart: %v (fresh %v), want the built image", err, img != nil && img.Fresh)
	}
}

// TestHTTP: HEAD, Range, ETag and conditional GET; the iPXE script and
// kernel; bad paths, methods and IDs.
func TestHTTP(t *testing.T) {
	f := newFixture(t)
	id := f.add(t, "boot: network\nkernel_args: [console=ttyS0]\nagent: {url: 'http://10.0.2.2:9000'}\n")
	srv := httptest.NewServer(f.Cache)
	defer srv.Close()
	iso := srv.URL + "/images/" + id + "/attestation.iso"

	resp := do(t, http.MethodHead, iso, nil)
	etag, size := resp.Header.Get("ETag"), resp.ContentLength
	if resp.StatusCode != 200 || len(etag) != 66 || size <= 0 || resp.Header.Get("Content-Type") != "application/x-iso9660-image" {
		t.Fatalf("HEAD: %d, ETag %q, length %d, type %q", resp.StatusCode, etag, size, resp.Header.Get("Content-Type"))
	}
	full := body(t, do(t, http.MethodGet, iso, nil))
	if int64(len(full)) != size {
		t.Fatalf("GET: %d bytes, HEAD said %d", len(full), size)
	}
	resp = do(t, http.MethodGet, iso, map[string]string{"Range": "bytes=32768-32773"})
	if got := body(t, resp); resp.StatusCode != http.StatusPartialContent || string(got) != string(full[32768:32774]) {
		t.Errorf("Range: %d %q, want 206 and the primary volume descriptor's first bytes %q", resp.StatusCode, got, full[32768:32774])
	}
	if resp := do(t, http.MethodGet, iso, map[string]string{"If-None-Match": etag}); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match with the ETag: %d, want 304", resp.StatusCode)
	}
	script := string(body(t, do(t, http.MethodGet, srv.URL+"/images/"+id+"/ipxe", nil)))
	for _, want := range []string{"kernel http://cp.example:8080/images/" + id + "/vmlinuz initrd=initrd.img attestation.url=http://10.0.2.2:9000 console=ttyS0",
		"initrd --name initrd.img http://cp.example:8080/images/" + id + "/initramfs"} {
		if !strings.Contains(script, want) {
			t.Errorf("ipxe script has no %q:\n%s", want, script)
		}
	}
	kernel := body(t, do(t, http.MethodGet, srv.URL+"/images/"+id+"/vmlinuz", nil))
	base, _ := os.ReadFile(filepath.Join(f.assets, bootassets.Kernel))
	if !bytes.Equal(kernel, base) {
		t.Error("vmlinuz is not the boot assets' kernel")
	}
	initrd := body(t, do(t, http.MethodGet, srv.URL+"/images/"+id+"/initramfs", nil))
	if agent, _ := os.ReadFile(filepath.Join(f.assets, bootassets.Initrd)); !bytes.Equal(initrd, agent) {
		t.Error("a schematic adding nothing to the initramfs: want the agent's initramfs, byte for byte")
	}

	for _, c := range []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, "/images/" + strings.Repeat("0", 64) + "/attestation.iso", http.StatusNotFound},
		{http.MethodGet, "/images/" + id + "/other", http.StatusNotFound},
		{http.MethodGet, "/images/" + id + "/../" + id + "/ipxe", http.StatusNotFound},
		{http.MethodGet, "/images/not-an-id/ipxe", http.StatusNotFound},
		{http.MethodGet, "/images/" + strings.ToUpper(id) + "/ipxe", http.StatusNotFound},
		{http.MethodPost, "/images/" + id + "/ipxe", http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		req.URL.Path = c.path // as sent, not cleaned
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.code)
		}
	}

	img, ok := f.Boot(id, boot.ArchX8664EFI)
	if !ok || img.Kernel != "http://cp.example:8080/images/"+id+"/vmlinuz" || img.Cmdline != "attestation.url=http://10.0.2.2:9000 console=ttyS0" {
		t.Errorf("Boot: %+v %v", img, ok)
	}
	if _, ok := f.Boot(id, boot.ArchARM64EFI); ok {
		t.Error("an arm64 machine was given the x86-64 image")
	}
	disk := f.add(t, "labels: {a: b}\n")
	if _, ok := f.Boot(disk, boot.ArchBIOS); ok {
		t.Error("a schematic that boots from disk was given a network image")
	}
}

func do(t *testing.T, method, url string, headers map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func body(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOverlay: a schematic's modules (with their dependencies, from the
// kernel package), files and CA are appended to the agent's initramfs.
func TestOverlay(t *testing.T) {
	f := newFixture(t)
	ca := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	doc, _ := json.Marshal(map[string]any{
		"modules": []string{"dummy"},
		"files":   []map[string]string{{"path": "etc/motd", "content": "hello", "mode": "0600"}},
		"agent":   map[string]string{"ca": ca, "tpm": "required"},
	})
	id := f.add(t, string(doc))
	img, err := f.Get(t.Context(), id, "machine-1")
	if err != nil {
		t.Fatal(err)
	}
	if !img.Fresh || f.machines[0] != "machine-1" {
		t.Errorf("fresh %v, event for %q; want a build for machine-1", img.Fresh, f.machines[0])
	}
	b, err := os.ReadFile(filepath.Join(f.dir, id, img.Assets, cache.InitrdFile))
	if err != nil {
		t.Fatal(err)
	}
	base, _ := os.ReadFile(filepath.Join(f.assets, bootassets.Initrd))
	if !bytes.HasPrefix(b, base) {
		t.Fatal("the initramfs does not start with the agent's")
	}
	got := map[string]cpio.Record{}
	for _, r := range records(t, bytes.TrimLeft(b[len(base):], "\x00")) {
		got[r.Name] = r
	}
	read := func(name string) string {
		r, ok := got[name]
		if !ok {
			t.Fatalf("the overlay has no %s", name)
		}
		b, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		return string(b)
	}
	mods := "lib/modules/" + release + "/kernel/"
	if read(mods+"drivers/misc/dummy.ko") != "module kernel/drivers/misc/dummy.ko" || read(mods+"lib/dep.ko") != "module kernel/lib/dep.ko" {
		t.Error("the module and its dependency are not the kernel package's files")
	}
	if _, ok := got[mods+"drivers/net/e1000.ko"]; ok {
		t.Error("the overlay repeats a module the agent's initramfs has")
	}
	if list := read(initramfs.ModulesFile); !strings.HasSuffix(list, "e1000\ndep\ndummy\n") {
		t.Errorf("module list:\n%s", list)
	}
	if read("etc/motd") != "hello" || got["etc/motd"].Mode&0o777 != 0o600 || read("etc/attestation/ca.pem") != ca {
		t.Error("the schematic's files and CA are not as given")
	}
	iso, _ := os.ReadFile(filepath.Join(f.dir, id, img.Assets, cache.ISOFile))
	if !bytes.Contains(iso, []byte("attestation.require_tpm=1")) {
		t.Error("agent.tpm: required is not on the ISO's command line")
	}
}

func records(t *testing.T, gz []byte) []cpio.Record {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestFailedBuild: a schematic naming a module the kernel lacks fails to
// build with an error naming it, leaves nothing on disk, records no event;
// Check refuses it up front.
func TestFailedBuild(t *testing.T) {
	f := newFixture(t)
	id := f.add(t, "modules: [no_such_module]\n")
	_, err := f.Get(t.Context(), id, "")
	if err == nil || !strings.Contains(err.Error(), `no module "no_such_module"`) {
		t.Fatalf("build: %v, want an error naming the module", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(f.dir, id)); len(entries) != 0 {
		t.Errorf("a failed build left %v", entries)
	}
	if f.events() != 0 {
		t.Error("a failed build recorded node.image_created")
	}
	srv := httptest.NewServer(f.Cache)
	defer srv.Close()
	if resp := do(t, http.MethodGet, srv.URL+"/images/"+id+"/attestation.iso", nil); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("GET of an image that fails to build: %d, want 500", resp.StatusCode)
	}
	s, _ := schematic.Parse([]byte("modules: [dummy, no_such_module]\n"))
	var se *schematic.Error
	if err := f.Check(s); !errors.As(err, &se) || se.Field != "modules[1]" {
		t.Errorf("Check: %v, want an error naming modules[1]", err)
	}
	ok, _ := schematic.Parse([]byte("modules: [dummy]\n"))
	if err := f.Check(ok); err != nil {
		t.Errorf("Check of a module the kernel has: %v", err)
	}
}

// TestNewAssets: new boot assets give a new image, and the old one goes.
func TestNewAssets(t *testing.T) {
	f := newFixture(t)
	id := f.add(t, "kernel_args: [quiet]\n")
	first, err := f.Get(t.Context(), id, "")
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.Get(t.Context(), id, "")
	if err != nil || again.Fresh || again.Assets != first.Assets {
		t.Fatalf("second Get: %v, fresh %v: want the same image, not built again", err, again != nil && again.Fresh)
	}
	later := time.Now().Add(time.Minute)
	write(t, filepath.Join(f.assets, bootassets.Kernel), strings.Repeat("K", 100<<10))
	os.Chtimes(filepath.Join(f.assets, bootassets.Kernel), later, later)
	second, err := f.Get(t.Context(), id, "")
	if err != nil || !second.Fresh || second.Assets == first.Assets {
		t.Fatalf("after new boot assets: %v, fresh %v; want a new build", err, second != nil && second.Fresh)
	}
	if _, err := os.Stat(filepath.Join(f.dir, id, first.Assets)); !os.IsNotExist(err) {
		t.Errorf("the image of the old boot assets is still there: %v", err)
	}
	if f.events() != 2 {
		t.Errorf("%d events, want one per build", f.events())
	}

	// No boot assets at all: a clear error, and 503 over HTTP.
	os.Remove(filepath.Join(f.assets, bootassets.ManifestFile))
	if _, err := f.Get(t.Context(), id, ""); !errors.Is(err, bootassets.ErrNotBuilt) || !strings.Contains(err.Error(), "make boot-assets") {
		t.Errorf("without boot assets: %v", err)
	}
	srv := httptest.NewServer(f.Cache)
	defer srv.Close()
	if resp := do(t, http.MethodGet, srv.URL+"/images/"+id+"/ipxe", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("without boot assets: %d, want 503", resp.StatusCode)
	}
}

// TestGetGivesUpWithItsContext: a caller whose context ends stops
// waiting; the build goes on for the others.
func TestGetGivesUpWithItsContext(t *testing.T) {
	f := newFixture(t)
	id := f.add(t, "{}")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := f.Get(ctx, id, ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with an ended context: %v", err)
	}
	built := false
	for range 100 {
		if _, err := f.Get(t.Context(), id, ""); err == nil {
			built = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !built || f.events() != 1 {
		t.Errorf("built %v, %d events; want the one build", built, f.events())
	}
}
