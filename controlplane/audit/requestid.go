package audit

import (
	"net/http"

	"github.com/google/uuid"
)

// Header carries a request's ID: a caller may send one, and every answer
// says the one its request was given.
const Header = "X-Request-Id"

// maxRequestIDLen bounds an ID a caller sends.
const maxRequestIDLen = 128

// ValidRequestID reports whether id may be taken from a caller: 1 to 128
// letters, digits, '-', '_', '.' or ':', so that it is safe in a log line
// and a header and cannot be mistaken for something else.
func ValidRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// NewRequestID returns a new request ID (a UUIDv7: IDs sort by time).
func NewRequestID() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

// RequestIDs gives every request an ID: the caller's X-Request-Id when it
// is well formed (ValidRequestID), else a new one. The ID is put in the
// request's context (RequestID) and in the X-Request-Id response header.
func RequestIDs(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(Header)
		if !ValidRequestID(id) {
			id = NewRequestID()
		}
		w.Header().Set(Header, id)
		next.ServeHTTP(w, r.WithContext(WithRequestID(r.Context(), id)))
	})
}
