package agentapi

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/controlplane/api"
	"github.com/attestation/attestation/controlplane/attest"
	"github.com/attestation/attestation/controlplane/store"
)

// quoteNonce returns the qualifying data of a TPMS_ATTEST: the nonce the
// quote claims to be over, to be hashed and compared with the stored hash
// (the daemon keeps no nonce in clear).
func quoteNonce(quote []byte) ([]byte, error) {
	if len(quote) == 0 {
		return nil, errors.New("no quote")
	}
	nonce, err := attest.QuoteNonce(quote)
	if err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	return nonce, nil
}

func invalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

// challengeError explains why a challenge cannot be answered: err is
// store.ErrUsed, store.ErrExpired, or an error of sealer.open. The
// token itself is not repeated: it is long, and says nothing readable.
func challengeError(err error) error {
	switch {
	case errors.Is(err, store.ErrUsed):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("this challenge was used already (a challenge is answered once): call Register for a new one"))
	case errors.Is(err, store.ErrExpired):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("this challenge has expired: call Register for a new one"))
	case errors.Is(err, errOtherKey), errors.Is(err, errUnreadableChallenge):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown challenge: %w: call Register for a new one", err))
	case errors.Is(err, errUnknownChallenge):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown challenge: %w (altered, or not a challenge_id Register returned): call Register for a new one", errUnknownChallenge))
	}
	return toConnect(err)
}

// toConnect maps domain errors to Connect codes, as the operator API does.
var toConnect = api.ToConnect
