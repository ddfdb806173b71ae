package extensions

import (
	"net/http"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/controlplane/auth"
)

// WriteError answers an error from a route in the shape of every other
// error of the daemon's REST API, {"code": N, "message": msg, "details": []},
// where N is the gRPC code the core API answers with status: 400 is
// invalid_argument (3), 401 unauthenticated (16), 403 permission_denied
// (7), 404 not_found (5), 405 and 501 unimplemented (12), 409
// failed_precondition (9), 413 and 429 resource_exhausted (8), 503
// unavailable (14), 504 deadline_exceeded (4), another 5xx internal (13),
// and another 4xx invalid_argument.
//
// msg is shown to the caller as it is: for a 500, log the cause and say
// no more than "internal error; see the daemon's log".
func WriteError(w http.ResponseWriter, status int, msg string) {
	auth.WriteJSONError(w, status, int(codeOf(status)), msg)
}

// codeOf is the gRPC code of an HTTP error status.
func codeOf(status int) connect.Code {
	switch status {
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated
	case http.StatusForbidden:
		return connect.CodePermissionDenied
	case http.StatusNotFound:
		return connect.CodeNotFound
	case http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return connect.CodeUnimplemented
	case http.StatusConflict:
		return connect.CodeFailedPrecondition
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return connect.CodeResourceExhausted
	case http.StatusServiceUnavailable:
		return connect.CodeUnavailable
	case http.StatusGatewayTimeout:
		return connect.CodeDeadlineExceeded
	}
	if status >= 500 {
		return connect.CodeInternal
	}
	return connect.CodeInvalidArgument
}
