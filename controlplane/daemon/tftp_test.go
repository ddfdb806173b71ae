package daemon_test

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
)

// TestTFTP starts the daemon with tftp_listen set and fetches a file from
// the default boot assets directory, DATA_DIR/boot.
func TestTFTP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	d := daemontest.Start(t, daemontest.Options{Config: func(c *config.Config) {
		c.TFTPListen = addr
		c.IPXEDir = t.TempDir()
	}})
	want := bytes.Repeat([]byte("boot "), 10_000)
	if err := os.WriteFile(filepath.Join(d.DataDir, "boot", "agent.ipxe"), want, 0o644); err != nil {
		t.Fatalf("write into the boot assets directory the daemon made: %v", err)
	}
	c, err := tftp.NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	c.SetBlockSize(1468)
	wt, err := c.Receive("agent.ipxe", "octet")
	if err != nil {
		t.Fatalf("tftp get agent.ipxe: %v", err)
	}
	var got bytes.Buffer
	if _, err := wt.WriteTo(&got); err != nil {
		t.Fatalf("tftp get agent.ipxe: %v", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("got %d bytes, want the %d of the file", got.Len(), len(want))
	}
}
