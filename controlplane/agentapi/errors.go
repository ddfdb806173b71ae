package agentapi

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"github.com/google/go-tpm/tpm2"

	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
)

// quoteNonce returns the qualifying data of a TPMS_ATTEST: the nonce the
// quote claims to be over, to be hashed and compared with the stored hash
// (the daemon keeps no nonce in clear).
func quoteNonce(quote []byte) (nonce []byte, err error) {
	if len(quote) == 0 {
		return nil, errors.New("no quote")
	}
	// The reflection-based decoder reports some malformed unions by
	// panicking.
	defer func() {
		if r := recover(); r != nil {
			nonce, err = nil, fmt.Errorf("malformed quote: %v", r)
		}
	}()
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](quote)
	if err != nil {
		return nil, fmt.Errorf("malformed quote: %v", err)
	}
	return a.ExtraData.Buffer, nil
}

func invalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

// challengeError explains why a challenge cannot be answered.
func challengeError(err error) error {
	switch {
	case errors.Is(err, store.ErrUsed):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("this challenge was used already (a challenge is answered once): call Register for a new one"))
	case errors.Is(err, store.ErrExpired):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("this challenge has expired: call Register for a new one"))
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, errors.New("unknown challenge: call Register for a new one"))
	}
	return toConnect(err)
}

// toConnect maps the errors of the lifecycle and the store to Connect
// codes.
func toConnect(err error) error {
	var (
		te *lifecycle.TransitionError
		de *machines.DecommissionedError
		ce *connect.Error
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return err
	case errors.As(err, &de):
		return connect.NewError(connect.CodeFailedPrecondition, de)
	case errors.As(err, &te):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, machines.ErrNotFound), errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}
