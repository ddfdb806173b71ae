package ndp

import (
	"errors"
	"fmt"
	"net"
)

// ICMPv6 types and the NDP option this package reads and writes
// (RFC 4861 4.1, 4.2, 4.6.1).
const (
	typeRouterSolicitation  = 133
	typeRouterAdvertisement = 134
	optSourceLinkLayer      = 1
)

// solicitation is what a router solicitation says: the sender's
// link-layer address (its source link-layer address option), nil when it
// sent none.
type solicitation struct {
	mac net.HardwareAddr
}

var errMalformed = errors.New("malformed router solicitation")

// parseSolicitation reads an ICMPv6 router solicitation (from its type
// field on) as RFC 4861 6.1.1 validates it: code 0, at least 8 bytes,
// every option a non-zero multiple of 8 bytes within the message.
func parseSolicitation(b []byte) (solicitation, error) {
	if len(b) < 8 || b[0] != typeRouterSolicitation {
		return solicitation{}, fmt.Errorf("%w: %d bytes", errMalformed, len(b))
	}
	if b[1] != 0 {
		return solicitation{}, fmt.Errorf("%w: code %d", errMalformed, b[1])
	}
	var s solicitation
	for opts := b[8:]; len(opts) > 0; {
		if len(opts) < 2 || opts[1] == 0 || int(opts[1])*8 > len(opts) {
			return solicitation{}, fmt.Errorf("%w: bad option length", errMalformed)
		}
		n := int(opts[1]) * 8
		// Ethernet's link-layer address fills an option of 8 bytes
		// (RFC 2464 6); other link layers' are not answered.
		if opts[0] == optSourceLinkLayer && n == 8 && s.mac == nil {
			s.mac = net.HardwareAddr(append([]byte(nil), opts[2:8]...))
		}
		opts = opts[n:]
	}
	return s, nil
}

// advertisement is the router advertisement that answers a solicitation
// (from its type field on; the kernel fills in the checksum): no hop
// limit, no flags (neither managed nor other configuration by DHCPv6),
// router lifetime 0 (not a default router), no reachable time or
// retransmission timer, and no option but the sender's link-layer
// address, mac, which spares the client a neighbour solicitation. It
// configures nothing; it ends the client's wait for routers.
func advertisement(mac net.HardwareAddr) []byte {
	return message(typeRouterAdvertisement, 16, mac)
}

// routerSolicitation is a solicitation from mac, as this package sends
// one when it starts, to hear from the link's routers.
func routerSolicitation(mac net.HardwareAddr) []byte {
	return message(typeRouterSolicitation, 8, mac)
}

// message is an NDP message of type typ with a header of n bytes, all
// zero, and mac as its source link-layer address option (none when mac
// is not Ethernet's).
func message(typ byte, n int, mac net.HardwareAddr) []byte {
	b := make([]byte, n, n+8)
	b[0] = typ
	if len(mac) == 6 {
		b = append(b, optSourceLinkLayer, 1)
		b = append(b, mac...)
	}
	return b
}
