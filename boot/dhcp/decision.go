package dhcp

import (
	"context"
	"strconv"

	"github.com/attestation/attestation/boot"
)

// BootResolver is the boot decision as package boot makes it
// (*boot.Resolver): the stored machine found by MAC or UUID, then
// boot.Policy.Decide.
type BootResolver interface {
	Decide(ctx context.Context, c boot.Client) (boot.Decision, error)
}

// FromBoot makes the boot decision a Decider: a machine the decision
// refuses (decommissioned) gets no answer.
func FromBoot(r BootResolver) Decider {
	return DeciderFunc(func(ctx context.Context, c Client) (Decision, error) {
		d, err := r.Decide(ctx, BootClient(c))
		if err != nil {
			return Decision{}, err
		}
		return Decision{Answer: d.Answers()}, nil
	})
}

// BootClient is c as package boot describes clients.
func BootClient(c Client) boot.Client {
	arch, err := boot.ParseArch(strconv.Itoa(int(c.ArchCode)))
	if err != nil {
		arch = boot.ArchUnknown
	}
	id, _ := boot.ParseUUID(c.UUID)
	return boot.Client{MAC: c.MAC, UUID: id, Arch: arch, IPXE: c.IPXE}
}
