package daemon_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/extensions"
	_ "github.com/attestation/attestation/extensions/all"
)

// bomb is gzip of n zero bytes at the best compression: about n/1000
// bytes that inflate to n.
func bomb(t testing.TB, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for written := 0; written < n; written += len(zeros) {
		zw.Write(zeros)
	}
	zw.Close()
	return buf.Bytes()
}

// zeros is a body of n zero bytes that is never held in memory.
type zeros struct{ left int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.left <= 0 {
		return 0, io.EOF
	}
	n := int64(len(p))
	n = min(n, z.left)
	clear(p[:n])
	z.left -= n
	return int(n), nil
}

// grpcFrame is one gRPC message frame holding b, flagged compressed.
func grpcFrame(b []byte, compressed bool) []byte {
	frame := make([]byte, 5, 5+len(b))
	if compressed {
		frame[0] = 1
	}
	binary.BigEndian.PutUint32(frame[1:], uint32(len(b)))
	return append(frame, b...)
}

// raceDetector is set when the tests run under -race (race_test.go).
var raceDetector bool

// rss reads a field (VmRSS, VmHWM) of /proc/self/status, in bytes.
func rss(t testing.TB, field string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s: %v", field, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// oversized is a request with a body over the limit: its route, its
// kind, and how it is sent.
type oversized struct {
	name    string
	method  string
	path    string
	headers map[string]string
	// body returns the body and its length (-1: chunked).
	body func() (io.Reader, int64)
	// want is "413" (REST and plain routes), "connect" (a Connect error
	// resource_exhausted) or "grpc" (grpc-status 8).
	want string
	auth bool
}

// oversizedRequests are, for every unauthenticated route, one route of
// each extension and an operator route without a token, a body of 10 MB
// with a Content-Length, 10 MB chunked, and a gzip bomb (a small body
// inflating to 200 MB; on gRPC in a compressed frame).
func oversizedRequests(t testing.TB) []oversized {
	const big = 10 << 20
	gz := bomb(t, 200<<20)
	plain := func() (io.Reader, int64) { return &zeros{left: big}, big }
	chunked := func() (io.Reader, int64) { return io.MultiReader(&zeros{left: big}), -1 }
	gzipped := func() (io.Reader, int64) { return bytes.NewReader(gz), int64(len(gz)) }
	grpcGzip := func() (io.Reader, int64) {
		b := grpcFrame(gz, true)
		return bytes.NewReader(b), int64(len(b))
	}
	grpcBig := func() (io.Reader, int64) {
		hdr := grpcFrame(nil, false)
		binary.BigEndian.PutUint32(hdr[1:], big)
		return io.MultiReader(bytes.NewReader(hdr), &zeros{left: big}), -1
	}
	type route struct {
		name, method, path, want string
		headers                  map[string]string
		gzipHeader               string
		auth                     bool
	}
	routes := []route{
		{name: "Connect Register", method: "POST", path: "/attestation.v1.AgentService/Register", want: "connect",
			headers: map[string]string{"Content-Type": "application/proto"}, gzipHeader: "Content-Encoding"},
		{name: "Connect Attest JSON", method: "POST", path: "/attestation.v1.AgentService/Attest", want: "connect",
			headers: map[string]string{"Content-Type": "application/json"}, gzipHeader: "Content-Encoding"},
		{name: "Connect Heartbeat", method: "POST", path: "/attestation.v1.AgentService/Heartbeat", want: "connect",
			headers: map[string]string{"Content-Type": "application/proto"}, gzipHeader: "Content-Encoding"},
		{name: "REST register without a token", method: "POST", path: "/api/v1/register", want: "413",
			headers: map[string]string{"Content-Type": "application/json"}, gzipHeader: "Content-Encoding"},
		{name: "config fetch", method: "GET", path: "/config/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", want: "413"},
		{name: "boot script", method: "GET", path: "/boot/ipxe?mac=52:54:00:00:00:01", want: "413"},
		{name: "boot asset", method: "GET", path: "/boot/assets/vmlinuz", want: "413"},
		{name: "healthz", method: "GET", path: "/healthz", want: "413"},
		{name: "tags extension", method: "POST", path: "/api/v1/tags/machines/m-1/tags", want: "413", auth: true,
			headers: map[string]string{"Content-Type": "application/json"}},
		{name: "webhook extension", method: "POST", path: "/api/v1/webhook/targets/x/test", want: "413", auth: true,
			headers: map[string]string{"Content-Type": "application/json"}},
	}
	var out []oversized
	for _, r := range routes {
		out = append(out,
			oversized{r.name + ", 10 MB", r.method, r.path, r.headers, plain, r.want, r.auth},
			oversized{r.name + ", 10 MB chunked", r.method, r.path, r.headers, chunked, r.want, r.auth})
		if r.gzipHeader != "" {
			h := map[string]string{r.gzipHeader: "gzip"}
			for k, v := range r.headers {
				h[k] = v
			}
			out = append(out, oversized{r.name + ", gzip bomb", r.method, r.path, h, gzipped, r.want, r.auth})
		}
	}
	grpc := map[string]string{"Content-Type": "application/grpc", "TE": "trailers"}
	out = append(out,
		oversized{"gRPC Register, 10 MB frame", "POST", "/attestation.v1.AgentService/Register", grpc, grpcBig, "grpc", false},
		oversized{"gRPC Register, gzip bomb frame", "POST", "/attestation.v1.AgentService/Register",
			map[string]string{"Content-Type": "application/grpc", "TE": "trailers", "Grpc-Encoding": "gzip"}, grpcGzip, "grpc", false},
		oversized{"gRPC health, 10 MB frame", "POST", "/grpc.health.v1.Health/Check", grpc, grpcBig, "grpc", false},
	)
	return out
}

// send sends r to the daemon and checks that it was refused as too large.
func (o oversized) send(t testing.TB, c *http.Client, d *daemontest.Daemon) {
	body, n := o.body()
	req, err := http.NewRequest(o.method, d.URL+o.path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = n
	for k, v := range o.headers {
		req.Header.Set(k, v)
	}
	if o.auth {
		req.Header.Set("Authorization", "Bearer "+d.Token)
	}
	resp, err := c.Do(req)
	if err != nil {
		// Refusing a body it will not read, the daemon answers and closes
		// the connection; a client still sending may see the close first.
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			return
		}
		t.Errorf("%s: %v", o.name, err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	switch o.want {
	case "413":
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !bytes.Contains(b, []byte("request body too large")) {
			t.Errorf("%s: got %d %q, want 413 saying the request body is too large", o.name, resp.StatusCode, b)
		}
	case "connect":
		var e struct{ Code, Message string }
		if json.Unmarshal(b, &e) != nil || e.Code != "resource_exhausted" {
			t.Errorf("%s: got %d %q, want a Connect resource_exhausted error", o.name, resp.StatusCode, b)
		}
	case "grpc":
		status := resp.Header.Get("Grpc-Status")
		if status == "" {
			status = resp.Trailer.Get("Grpc-Status")
		}
		if status != "8" {
			t.Errorf("%s: got HTTP %d, grpc-status %q (%s), want grpc-status 8 (resource exhausted)", o.name, resp.StatusCode, status, b)
		}
	}
}

func limitsDaemon(t testing.TB) *daemontest.Daemon {
	return daemontest.Start(t, daemontest.Options{
		Extensions: extensions.All(),
		Config:     func(c *config.Config) { c.EKPolicy = config.EKPolicyAny },
	})
}

// h2c is a client speaking HTTP/2 without TLS, as gRPC clients do.
func h2c() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

// TestOversizedBodies sends every oversized request, over HTTP/1.1 and
// HTTP/2, and checks each is refused the way its protocol says, that the
// refusals are counted on /metrics, and that nothing changed.
func TestOversizedBodies(t *testing.T) {
	d := limitsDaemon(t)
	for _, proto := range []struct {
		name   string
		client *http.Client
	}{{"HTTP/1.1", &http.Client{}}, {"h2c", h2c()}} {
		for _, o := range oversizedRequests(t) {
			if o.want == "grpc" && proto.name != "h2c" {
				continue
			}
			t.Run(proto.name+"/"+o.name, func(t *testing.T) { o.send(t, proto.client, d) })
		}
	}
	resp, err := http.Get(d.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`attestation_http_request_body_refused_total{reason="content_length",route="rest"}`,
		`attestation_http_request_body_refused_total{reason="content_length",route="rpc"}`,
		`attestation_http_request_body_refused_total{reason="body",route="http"}`,
		`attestation_http_request_body_refused_total{reason="decompressed",route="rpc"}`,
	} {
		if !bytes.Contains(m, []byte(want)) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	// Nothing was registered.
	req, _ := http.NewRequest("GET", d.URL+"/api/v1/machines", nil)
	req.Header.Set("Authorization", "Bearer "+d.Token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct{ Machines []json.RawMessage }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list.Machines) != 0 {
		t.Errorf("after the refused requests: %d machines (%v), want none", len(list.Machines), err)
	}
}

// TestOversizedBodiesMemory sends 100 oversized requests of each kind at
// once and checks that the process's peak RSS (the daemon runs in it)
// grows by less than 150 MB: without the limits one gzip bomb alone took
// the daemon past 3 GB.
func TestOversizedBodiesMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 2 GB of request bodies")
	}
	if raceDetector {
		t.Skip("under the race detector memory use is several times what it is: the bound would measure the detector")
	}
	d := limitsDaemon(t)
	reqs := oversizedRequests(t)
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak RSS: %v", err)
	}
	before := rss(t, "VmHWM")
	h1, h2 := &http.Client{}, h2c()
	var wg sync.WaitGroup
	for i := range 100 {
		for _, o := range []oversized{reqs[i%len(reqs)], reqs[(i+7)%len(reqs)]} {
			c := h1
			if o.want == "grpc" {
				c = h2
			}
			wg.Go(func() { o.send(t, c, d) })
		}
	}
	wg.Wait()
	peak := rss(t, "VmHWM")
	t.Logf("peak RSS %d MB before, %d MB during 200 oversized requests", before>>20, peak>>20)
	if grew := peak - before; grew > 150<<20 {
		t.Errorf("peak RSS grew by %d MB, want under 150 MB", grew>>20)
	}
}
