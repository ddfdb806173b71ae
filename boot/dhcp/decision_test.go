package dhcp

import (
	"context"
	"errors"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/attestation/attestation/boot"
	"github.com/attestation/attestation/controlplane/lifecycle"
)

// fixedMachine resolves every client to one stored machine.
type fixedMachine struct {
	m   *boot.Machine
	got boot.Client
}

func (f *fixedMachine) Decide(_ context.Context, c boot.Client) (boot.Decision, error) {
	f.got = c
	return boot.Policy{PublicURL: testPublicURL}.Decide(f.m, c), nil
}

func TestFromBoot(t *testing.T) {
	tests := []struct {
		name    string
		m       *boot.Machine
		wantErr error
	}{
		{name: "unknown machine boots", m: nil},
		{name: "registered boots", m: &boot.Machine{ID: "m1", State: lifecycle.Registered}},
		{name: "provisioned boots (to its disk)", m: &boot.Machine{ID: "m1", State: lifecycle.Provisioned}},
		{name: "decommissioned gets nothing", m: &boot.Machine{ID: "m1", State: lifecycle.Decommissioned}, wantErr: ErrRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &fixedMachine{m: tt.m}
			h := &Handler{Mode: ModeProxy, PublicURL: testPublicURL, Arch: DefaultArchTable(), Decider: FromBoot(r)}
			_, err := h.Handle(context.Background(), Request{
				Data: packet(t, dhcpv4.MessageTypeDiscover, pxe(iana.EFI_ARM64)...), Port: ServerPort, ServerIP: testServerIP})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got error %v, want %v", err, tt.wantErr)
			}
			if r.got.Arch != boot.ArchARM64EFI || r.got.MAC.String() != testMAC.String() {
				t.Errorf("the decision got client %+v, want arm64-efi and %s", r.got, testMAC)
			}
		})
	}
}
