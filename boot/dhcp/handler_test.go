package dhcp

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	testMAC      = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	testServerIP = net.IPv4(10, 9, 0, 1).To4()
)

const testPublicURL = "http://10.9.0.1:9000"

// packet builds a client request with the given modifiers.
func packet(t testing.TB, mt dhcpv4.MessageType, mods ...dhcpv4.Modifier) []byte {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(testMAC),
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithBroadcast(true),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.ToBytes()
}

func pxe(arch iana.Arch) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
	}
}

func with(mods []dhcpv4.Modifier, more ...dhcpv4.Modifier) []dhcpv4.Modifier {
	return append(append([]dhcpv4.Modifier{}, mods...), more...)
}

func TestHandleProxy(t *testing.T) {
	uuidOpt := dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier,
		[]byte{0, 0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff})
	script := testPublicURL + "/boot/ipxe?mac=${net0/mac}&uuid=${uuid}&arch=${buildarch}-${platform}"
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 68}
	tests := []struct {
		name     string
		data     []byte
		port     int
		src      *net.UDPAddr
		decider  Decider
		wantErr  error
		wantType dhcpv4.MessageType
		wantFile string
		wantArch string
		wantVCI  string
		wantDst  *net.UDPAddr
		wantUUID string
	}{
		{name: "bios discover", data: packet(t, dhcpv4.MessageTypeDiscover, pxe(iana.INTEL_X86PC)...),
			wantType: dhcpv4.MessageTypeOffer, wantFile: "undionly.kpxe", wantArch: "bios", wantVCI: "PXEClient", wantDst: bcast},
		{name: "x86-64 uefi (7)", data: packet(t, dhcpv4.MessageTypeDiscover, pxe(iana.EFI_X86_64)...),
			wantType: dhcpv4.MessageTypeOffer, wantFile: "snponly.efi", wantArch: "x86-64-efi", wantVCI: "PXEClient", wantDst: bcast},
		{name: "x86-64 uefi (9)", data: packet(t, dhcpv4.MessageTypeDiscover, pxe(iana.EFI_BC)...),
			wantType: dhcpv4.MessageTypeOffer, wantFile: "snponly.efi", wantArch: "x86-64-efi", wantVCI: "PXEClient", wantDst: bcast},
		{name: "arm64 uefi", data: packet(t, dhcpv4.MessageTypeDiscover, pxe(iana.EFI_ARM64)...),
			wantType: dhcpv4.MessageTypeOffer, wantFile: "snp-arm64.efi", wantArch: "arm64-efi", wantVCI: "PXEClient", wantDst: bcast},
		{name: "uefi http boot", data: packet(t, dhcpv4.MessageTypeDiscover,
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003001")),
			dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64_HTTP))),
			wantType: dhcpv4.MessageTypeOffer, wantFile: testPublicURL + "/boot/assets/snponly.efi", wantArch: "x86-64-efi-http", wantVCI: "HTTPClient", wantDst: bcast},
		{name: "no option 93: arch from option 60", data: packet(t, dhcpv4.MessageTypeDiscover,
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016"))),
			wantType: dhcpv4.MessageTypeOffer, wantFile: "snponly.efi", wantArch: "x86-64-efi", wantVCI: "PXEClient", wantDst: bcast},
		{name: "no option 93, 94, 97: bios", data: packet(t, dhcpv4.MessageTypeDiscover,
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient"))),
			wantType: dhcpv4.MessageTypeOffer, wantFile: "undionly.kpxe", wantArch: "bios", wantVCI: "PXEClient", wantDst: bcast},
		{name: "ipxe user class", data: packet(t, dhcpv4.MessageTypeDiscover,
			with(pxe(iana.INTEL_X86PC), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE")))...),
			wantType: dhcpv4.MessageTypeOffer, wantFile: script, wantArch: "bios", wantVCI: "PXEClient", wantDst: bcast},
		{name: "ipxe rfc 3004 user class", data: packet(t, dhcpv4.MessageTypeDiscover,
			with(pxe(iana.EFI_X86_64), dhcpv4.WithOption(dhcpv4.OptRFC3004UserClass([]string{"iPXE"})))...),
			wantType: dhcpv4.MessageTypeOffer, wantFile: script, wantArch: "x86-64-efi", wantVCI: "PXEClient", wantDst: bcast},
		{name: "ipxe option 175", data: packet(t, dhcpv4.MessageTypeDiscover,
			with(pxe(iana.EFI_X86_64), dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{177, 5, 1, 0x80, 0x86, 0x10, 0x0e}))...),
			wantType: dhcpv4.MessageTypeOffer, wantFile: script, wantArch: "x86-64-efi", wantVCI: "PXEClient", wantDst: bcast},
		{name: "request", data: packet(t, dhcpv4.MessageTypeRequest,
			with(pxe(iana.INTEL_X86PC), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServerIP)))...),
			wantType: dhcpv4.MessageTypeAck, wantFile: "undionly.kpxe", wantArch: "bios", wantVCI: "PXEClient", wantDst: bcast},
		{name: "request for another server", data: packet(t, dhcpv4.MessageTypeRequest,
			with(pxe(iana.INTEL_X86PC), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 9, 0, 2))))...),
			wantErr: ErrNotForUs},
		{name: "boot server port", port: BootServerPort, src: &net.UDPAddr{IP: net.IPv4(10, 9, 0, 50), Port: 4011},
			data: packet(t, dhcpv4.MessageTypeRequest,
				with(pxe(iana.EFI_X86_64), dhcpv4.WithClientIP(net.IPv4(10, 9, 0, 50)), dhcpv4.WithOption(uuidOpt))...),
			wantType: dhcpv4.MessageTypeAck, wantFile: "snponly.efi", wantArch: "x86-64-efi", wantVCI: "PXEClient",
			wantDst: &net.UDPAddr{IP: net.IPv4(10, 9, 0, 50), Port: 4011}, wantUUID: "00112233-4455-6677-8899-aabbccddeeff"},
		{name: "relayed", data: packet(t, dhcpv4.MessageTypeDiscover, with(pxe(iana.INTEL_X86PC), dhcpv4.WithRelay(net.IPv4(10, 20, 0, 1)))...),
			wantType: dhcpv4.MessageTypeOffer, wantFile: "undionly.kpxe", wantArch: "bios", wantVCI: "PXEClient",
			wantDst: &net.UDPAddr{IP: net.IPv4(10, 20, 0, 1).To4(), Port: 67}},
		{name: "ciaddr", data: packet(t, dhcpv4.MessageTypeRequest, with(pxe(iana.INTEL_X86PC), dhcpv4.WithClientIP(net.IPv4(10, 9, 0, 7)))...),
			wantType: dhcpv4.MessageTypeAck, wantFile: "undionly.kpxe", wantArch: "bios", wantVCI: "PXEClient",
			wantDst: &net.UDPAddr{IP: net.IPv4(10, 9, 0, 7).To4(), Port: 68}},
		{name: "not pxe", data: packet(t, dhcpv4.MessageTypeDiscover), wantErr: ErrNotPXE},
		{name: "other vendor class", data: packet(t, dhcpv4.MessageTypeDiscover,
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("MSFT 5.0"))), wantErr: ErrNotPXE},
		{name: "unknown arch", data: packet(t, dhcpv4.MessageTypeDiscover, pxe(iana.S390_BASIC)...), wantErr: ErrUnknownArch},
		{name: "release ignored", data: packet(t, dhcpv4.MessageTypeRelease, pxe(iana.INTEL_X86PC)...), wantErr: ErrIgnoredType},
		{name: "malformed", data: []byte{1, 2, 3}, wantErr: ErrMalformed},
		{name: "decommissioned", data: packet(t, dhcpv4.MessageTypeDiscover, pxe(iana.INTEL_X86PC)...),
			decider: DeciderFunc(func(context.Context, Client) (Decision, error) { return Decision{}, nil }),
			wantErr: ErrRefused},
		{name: "decision fails", data: packet(t, dhcpv4.MessageTypeDiscover, pxe(iana.INTEL_X86PC)...),
			decider: DeciderFunc(func(context.Context, Client) (Decision, error) { return Decision{}, errors.New("db down") }),
			wantErr: ErrDecision},
		{name: "per machine file", data: packet(t, dhcpv4.MessageTypeDiscover, pxe(iana.EFI_X86_64)...),
			decider: DeciderFunc(func(_ context.Context, c Client) (Decision, error) {
				if c.MAC.String() != testMAC.String() || c.Arch.Name != "x86-64-efi" {
					t.Errorf("decider got %+v", c)
				}
				return Decision{Answer: true, File: "ipxe.efi"}, nil
			}),
			wantType: dhcpv4.MessageTypeOffer, wantFile: "ipxe.efi", wantArch: "x86-64-efi", wantVCI: "PXEClient", wantDst: bcast},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{Mode: ModeProxy, PublicURL: testPublicURL, Arch: DefaultArchTable(), Decider: tt.decider}
			port := tt.port
			if port == 0 {
				port = ServerPort
			}
			r, err := h.Handle(context.Background(), Request{Data: tt.data, Src: tt.src, Port: port, ServerIP: testServerIP})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v", err)
			}
			// The reply goes through the wire format, as clients see it.
			p, err := dhcpv4.FromBytes(r.Packet.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			if got := p.MessageType(); got != tt.wantType {
				t.Errorf("got type %s, want %s", got, tt.wantType)
			}
			if p.OpCode != dhcpv4.OpcodeBootReply {
				t.Errorf("got opcode %s, want BootReply", p.OpCode)
			}
			file := p.BootFileName
			if file == "" {
				file = p.BootFileNameOption()
			}
			if file != tt.wantFile {
				t.Errorf("got file %q, want %q", file, tt.wantFile)
			}
			if !p.YourIPAddr.IsUnspecified() {
				t.Errorf("got yiaddr %s, want 0.0.0.0 (proxy mode hands out no address)", p.YourIPAddr)
			}
			if !p.ServerIPAddr.Equal(testServerIP) || !p.ServerIdentifier().Equal(testServerIP) {
				t.Errorf("got siaddr %s, server id %s, want %s", p.ServerIPAddr, p.ServerIdentifier(), testServerIP)
			}
			if got := p.ClassIdentifier(); got != tt.wantVCI {
				t.Errorf("got option 60 %q, want %q", got, tt.wantVCI)
			}
			if p.ClientHWAddr.String() != testMAC.String() {
				t.Errorf("got chaddr %s, want %s", p.ClientHWAddr, testMAC)
			}
			if r.Client.Arch.Name != tt.wantArch {
				t.Errorf("got arch %q, want %q", r.Client.Arch.Name, tt.wantArch)
			}
			if r.Client.UUID != tt.wantUUID {
				t.Errorf("got uuid %q, want %q", r.Client.UUID, tt.wantUUID)
			}
			if tt.wantUUID != "" && p.GetOneOption(dhcpv4.OptionClientMachineIdentifier) == nil {
				t.Error("option 97 not echoed")
			}
			if r.Dst.String() != tt.wantDst.String() {
				t.Errorf("got destination %s, want %s", r.Dst, tt.wantDst)
			}
		})
	}
}

func TestDefaultArchTableValid(t *testing.T) {
	if err := DefaultArchTable().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := ArchTable{0: {Name: "bios", File: "../etc/passwd"}}
	if err := bad.Validate(); err == nil {
		t.Error("a file with .. passed validation")
	}
}
