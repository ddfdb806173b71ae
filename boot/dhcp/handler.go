package dhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/google/uuid"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/attestation/attestation/boot"
)

// Ports DHCP uses: the server's, the client's and the PXE boot server's.
const (
	ServerPort     = 67
	ClientPort     = 68
	BootServerPort = 4011
)

// Mode is how the server takes part in DHCP.
type Mode string

// Modes.
const (
	// ModeProxy answers PXE clients only, beside the site's DHCP server,
	// and never hands out addresses.
	ModeProxy Mode = "proxy"
	// ModeFull is a complete DHCP server with an address pool.
	ModeFull Mode = "full"
)

// ScriptPath is where the HTTP API serves the per-machine iPXE script.
const ScriptPath = "/boot/ipxe"

// scriptQuery asks iPXE to fill in the machine's MAC, SMBIOS UUID and its
// build architecture and platform (i386-pcbios for undionly.kpxe,
// x86_64-efi, arm64-efi) when it fetches the script: the architecture
// alone cannot tell a 64-bit BIOS build of iPXE from a UEFI one.
const scriptQuery = "?mac=${net0/mac}&uuid=${uuid}&arch=${buildarch}-${platform}"

// Client is what a request says about the machine asking.
type Client struct {
	MAC net.HardwareAddr
	// UUID is the SMBIOS UUID from option 97, or empty.
	UUID string
	// ArchCode is option 93 (or the arch in option 60, or BIOS).
	ArchCode uint16
	Arch     Arch
	// IPXE is set when the client is iPXE itself (user class iPXE or
	// option 175): it gets the script URL.
	IPXE bool
	// HTTP is set for UEFI HTTP boot clients (option 60 HTTPClient).
	HTTP bool
}

// Decision is the boot decision's answer for one client.
type Decision struct {
	// Answer is false for machines that must get nothing
	// (decommissioned).
	Answer bool
	// File, when set, replaces the arch table's boot file for this
	// machine.
	File string
}

// Decider makes the boot decision for a client.
type Decider interface {
	Decide(ctx context.Context, c Client) (Decision, error)
}

// DeciderFunc adapts a function to Decider.
type DeciderFunc func(ctx context.Context, c Client) (Decision, error)

// Decide calls f.
func (f DeciderFunc) Decide(ctx context.Context, c Client) (Decision, error) { return f(ctx, c) }

// Request is one received datagram.
type Request struct {
	Data []byte
	// Src is the sender; Port the local port it arrived on (67 or 4011).
	Src  *net.UDPAddr
	Port int
	// ServerIP is the receiving interface's address: the server
	// identifier and next-server of the replies.
	ServerIP net.IP
}

// Reply is a packet to send and where to.
type Reply struct {
	Packet *dhcpv4.DHCPv4
	Dst    *net.UDPAddr
	Client Client
	// Kind is "offer" or "ack".
	Kind string
}

// Why a request gets no reply; each is a metrics label.
var (
	ErrMalformed   = errors.New("malformed packet")
	ErrNotRequest  = errors.New("not a BOOTREQUEST")
	ErrNotPXE      = errors.New("not a PXE client")
	ErrUnknownArch = errors.New("unknown client architecture")
	ErrNotForUs    = errors.New("request for another server")
	ErrIgnoredType = errors.New("message type not answered")
	ErrRefused     = errors.New("boot decision: no answer")
	ErrDecision    = errors.New("boot decision failed")
	ErrNoServerIP  = errors.New("no server address")
	ErrNoAddress   = errors.New("no address to offer")
	ErrLeaseStore  = errors.New("lease store failed")
)

// Handler turns requests into replies. It holds no sockets and is safe
// for concurrent use.
type Handler struct {
	Mode Mode
	// PublicURL is the HTTP API's base URL (no trailing slash).
	PublicURL string
	Arch      ArchTable
	// Decider, when nil, answers every PXE client with the table's file.
	Decider Decider

	// leases is full mode's address pool.
	leases *leases
}

// Handle parses one datagram and returns the reply to send, or an error
// that wraps one of the Err values above saying why there is none.
func (h *Handler) Handle(ctx context.Context, req Request) (Reply, error) {
	m, err := parse(req.Data)
	if err != nil {
		return Reply{}, err
	}
	return h.handle(ctx, req, m)
}

// parse reads a datagram as a BOOTREQUEST; the message keeps no
// reference to data.
func parse(data []byte) (*dhcpv4.DHCPv4, error) {
	m, err := dhcpv4.FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if m.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, ErrNotRequest
	}
	if len(m.ClientHWAddr) == 0 || len(m.ClientHWAddr) > 16 {
		return nil, fmt.Errorf("%w: hardware address length %d", ErrMalformed, len(m.ClientHWAddr))
	}
	return m, nil
}

// waits reports whether answering m may wait on I/O: a boot decision
// (the decider may read a database) or, in full mode, a lease stored
// before the client is told. Other packets are answered from memory.
func (h *Handler) waits(m *dhcpv4.DHCPv4) bool {
	if h.Decider != nil && isBootClient(m) {
		return true
	}
	if h.Mode != ModeFull {
		return false
	}
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeInform:
		return false
	}
	return true
}

// isBootClient reports whether m's class identifier is one client
// treats as PXE or HTTP boot (before the architecture is checked).
func isBootClient(m *dhcpv4.DHCPv4) bool {
	class := m.ClassIdentifier()
	return strings.HasPrefix(class, "PXEClient") || strings.HasPrefix(class, "HTTPClient")
}

// handle answers a parsed request.
func (h *Handler) handle(ctx context.Context, req Request, m *dhcpv4.DHCPv4) (Reply, error) {
	ip := req.ServerIP.To4()
	if ip == nil || ip.IsUnspecified() {
		return Reply{}, ErrNoServerIP
	}
	switch h.Mode {
	case ModeProxy, "":
		return h.proxy(ctx, req, m, ip)
	case ModeFull:
		if h.leases == nil {
			return Reply{}, fmt.Errorf("%w: full mode without a pool", ErrNoAddress)
		}
		return h.full(ctx, req, m, ip)
	default:
		return Reply{}, fmt.Errorf("%w: mode %q", ErrIgnoredType, h.Mode)
	}
}

func (h *Handler) proxy(ctx context.Context, req Request, m *dhcpv4.DHCPv4, serverIP net.IP) (Reply, error) {
	var kind string
	mt := m.MessageType()
	switch {
	case req.Port == BootServerPort && (mt == dhcpv4.MessageTypeRequest || mt == dhcpv4.MessageTypeInform || mt == dhcpv4.MessageTypeDiscover):
		kind = "ack"
	case mt == dhcpv4.MessageTypeDiscover:
		kind = "offer"
	case mt == dhcpv4.MessageTypeRequest:
		// A REQUEST naming another server selects that server's offer.
		if sid := m.ServerIdentifier(); sid != nil && !sid.Equal(serverIP) {
			return Reply{}, ErrNotForUs
		}
		kind = "ack"
	default:
		return Reply{}, fmt.Errorf("%w: %s", ErrIgnoredType, mt)
	}
	c, err := h.client(m)
	if err != nil {
		return Reply{}, err
	}
	file, err := h.decide(ctx, c)
	if err != nil {
		return Reply{}, err
	}

	typ := dhcpv4.MessageTypeOffer
	if kind == "ack" {
		typ = dhcpv4.MessageTypeAck
	}
	r, err := dhcpv4.NewReplyFromRequest(m,
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithServerIP(serverIP),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP)),
		dhcpv4.WithOptionCopied(m, dhcpv4.OptionClientMachineIdentifier),
	)
	if err != nil {
		return Reply{}, fmt.Errorf("build reply: %w", err)
	}
	r.YourIPAddr = net.IPv4zero
	setBoot(r, c, file)
	return Reply{Packet: r, Dst: destination(req, m), Client: c, Kind: kind}, nil
}

// setBoot adds what a PXE or HTTP boot client boots to a reply.
func setBoot(r *dhcpv4.DHCPv4, c Client, file string) {
	switch {
	case c.HTTP && !c.IPXE:
		r.UpdateOption(dhcpv4.OptClassIdentifier("HTTPClient"))
	default:
		r.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
		if !c.IPXE {
			// PXE vendor options: discovery control 8 = boot the file
			// named in this reply, without a boot-server discovery.
			r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
		}
	}
	setBootFile(r, file)
}

// client reads who is asking: PXE (or HTTP boot) clients only.
func (h *Handler) client(m *dhcpv4.DHCPv4) (Client, error) {
	class := m.ClassIdentifier()
	c := Client{MAC: m.ClientHWAddr, IPXE: isIPXE(m)}
	switch {
	case strings.HasPrefix(class, "PXEClient"):
	case strings.HasPrefix(class, "HTTPClient"):
		c.HTTP = true
	default:
		return Client{}, ErrNotPXE
	}
	// Lenient: option 93 may be missing or malformed; then the arch in
	// option 60, then BIOS.
	if archs := m.ClientArch(); len(archs) > 0 {
		c.ArchCode = uint16(archs[0])
	} else if a, ok := classArch(class); ok {
		c.ArchCode = a
	}
	a, ok := h.Arch[c.ArchCode]
	if !ok {
		return Client{}, fmt.Errorf("%w: %d", ErrUnknownArch, c.ArchCode)
	}
	c.Arch = a
	if a.HTTP {
		c.HTTP = true
	}
	c.UUID = clientUUID(m.GetOneOption(dhcpv4.OptionClientMachineIdentifier))
	return c, nil
}

// decide applies the boot decision and returns the boot file: the iPXE
// script URL for iPXE, an HTTP URL for HTTP boot, else a TFTP file name.
func (h *Handler) decide(ctx context.Context, c Client) (string, error) {
	file := c.Arch.File
	if h.Decider != nil {
		// Bounded here, not per packet: most packets in full mode need
		// no decision, and a timer per packet costs.
		ctx, cancel := context.WithTimeout(ctx, decisionTimeout)
		defer cancel()
		d, err := h.Decider.Decide(ctx, c)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrDecision, err)
		}
		if !d.Answer {
			return "", ErrRefused
		}
		if d.File != "" {
			file = d.File
		}
	}
	switch {
	case c.IPXE:
		return h.PublicURL + ScriptPath + scriptQuery, nil
	case c.HTTP:
		return h.PublicURL + boot.AssetsPath + file, nil
	}
	return file, nil
}

// setBootFile puts the name in the BOOTP file field, and in option 67 too
// when it does not fit there.
func setBootFile(r *dhcpv4.DHCPv4, file string) {
	if len(file) < 128 {
		r.BootFileName = file
		return
	}
	r.BootFileName = ""
	r.UpdateOption(dhcpv4.OptBootFileName(file))
}

// destination is where a reply goes (RFC 2131 4.1): the boot-server
// port answers its sender; then the relay, then ciaddr, then broadcast.
// Unicast to yiaddr would need an ARP entry the kernel does not have for
// a client without an address, so the broadcast bit is not consulted.
func destination(req Request, m *dhcpv4.DHCPv4) *net.UDPAddr {
	if req.Port == BootServerPort && req.Src != nil && !req.Src.IP.IsUnspecified() {
		return req.Src
	}
	if gi := m.GatewayIPAddr.To4(); gi != nil && !gi.IsUnspecified() {
		return &net.UDPAddr{IP: gi, Port: ServerPort}
	}
	if ci := m.ClientIPAddr.To4(); ci != nil && !ci.IsUnspecified() {
		return &net.UDPAddr{IP: ci, Port: ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: ClientPort}
}

// isIPXE reports whether the client is iPXE: user class iPXE (raw, as
// iPXE sends it, or RFC 3004) or iPXE's encapsulated options (175).
func isIPXE(m *dhcpv4.DHCPv4) bool {
	if m.Options.Has(dhcpv4.GenericOptionCode(175)) {
		return true
	}
	uc := m.GetOneOption(dhcpv4.OptionUserClassInformation)
	return uc != nil && bytes.Contains(uc, []byte("iPXE"))
}

// clientUUID decodes option 97 (type 0, then 16 bytes, RFC 4578); the
// GUID's first three fields are little-endian, as SMBIOS stores them and
// iPXE's ${uuid} prints them.
func clientUUID(b []byte) string {
	if len(b) != 17 || b[0] != 0 {
		return ""
	}
	var u uuid.UUID
	copy(u[:], b[1:])
	u[0], u[1], u[2], u[3] = u[3], u[2], u[1], u[0]
	u[4], u[5] = u[5], u[4]
	u[6], u[7] = u[7], u[6]
	return u.String()
}
