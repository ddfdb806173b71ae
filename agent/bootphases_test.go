//go:build cgo && linux

package agent_test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/internal/testenv"
)

// bootPhase is where one phase of a network boot ends: its name and when
// the test saw it, on the host's clock (zero when it did not).
type bootPhase struct {
	name string
	at   time.Time
}

// logPhases logs the phases of a boot that started at start (the VM's
// power-on) as a table, each with when it ended after start and how long
// it took after the phase before, and notes them on one line for CI.
func logPhases(t *testing.T, title string, start time.Time, phases []bootPhase) {
	t.Helper()
	var table, note strings.Builder
	fmt.Fprintf(&table, "%s, from VM start:\n", title)
	fmt.Fprintf(&table, "  %-34s %8s %8s\n", "phase ends", "at", "took")
	prev := start
	for _, p := range phases {
		if p.at.IsZero() {
			fmt.Fprintf(&table, "  %-34s %8s %8s\n", p.name, "-", "-")
			fmt.Fprintf(&note, "; %s -", p.name)
			continue
		}
		at, took := p.at.Sub(start), p.at.Sub(prev)
		prev = p.at
		fmt.Fprintf(&table, "  %-34s %8s %8s\n", p.name, seconds(at), seconds(took))
		fmt.Fprintf(&note, "; %s %s (+%s)", p.name, seconds(at), seconds(took))
	}
	t.Log(table.String())
	testenv.Note(t, "%s: %s", title, strings.TrimPrefix(note.String(), "; "))
}

// seconds shows d in seconds to a tenth.
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
}

// printk matches a kernel console line's timestamp.
var printk = regexp.MustCompile(`\[\s*(\d+\.\d+)\] `)

// kernelStart estimates when the kernel started from its first console
// line after since: when the line arrived less the seconds the kernel
// stamped it with. It is zero when no such line arrived.
func kernelStart(console *consoleLog, since time.Time) time.Time {
	at, m, ok := console.after(since, printk)
	if !ok {
		return time.Time{}
	}
	s, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return time.Time{}
	}
	return at.Add(-time.Duration(s * float64(time.Second)))
}

// seen is when the first line containing s arrived on c, or zero.
func seen(c *consoleLog, s string) time.Time {
	at, _, _ := c.when(s)
	return at
}

// agentPhases are the phases of a network boot from the iPXE script on,
// as the daemon's log and the console of the lab's VM with NIC mac show
// them: the kernel and initramfs fetched (at initrd), the kernel started,
// the agent as /init, its NIC modules loaded and its DHCP lease; then
// node.online at online.
func (l *pxeLab) agentPhases(console *consoleLog, mac string, initrd, online time.Time) []bootPhase {
	return []bootPhase{
		{"iPXE script fetched", seen(l.daemon, `msg="boot script" component=boot mac=`+mac)},
		{"kernel and initramfs fetched", initrd},
		{"kernel started (printk clock)", kernelStart(console, initrd)},
		{"agent running as /init", seen(console, "running as /init")},
		{"NIC modules loaded", seen(console, `msg="modules ready"`)},
		{"agent's DHCP lease", seen(console, `msg="dhcp lease"`)},
		{"node.online", online},
	}
}

// eventTimes returns when the machine's events of type typ were recorded,
// in order.
func (l *pxeLab) eventTimes(t *testing.T, machine, typ string) []time.Time {
	t.Helper()
	var res struct {
		Events []struct {
			Time time.Time `json:"time"`
		} `json:"events"`
	}
	if err := l.api("GET", "/api/v1/events?machine="+machine+"&type="+typ, "", &res); err != nil {
		t.Fatal(err)
	}
	var at []time.Time
	for _, e := range res.Events {
		at = append(at, e.Time)
	}
	return at
}

// nth is the nth time of at (from 0), or zero.
func nth(at []time.Time, n int) time.Time {
	if n < len(at) {
		return at[n]
	}
	return time.Time{}
}
