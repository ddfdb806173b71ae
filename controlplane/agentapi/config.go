package agentapi

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"

	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
)

// ConfigPath is the route of the one-time config fetch.
const ConfigPath = "/config/{token}"

// ConfigHandler serves GET /config/{token}: the machine's config, rendered
// from its role's template, exactly once (200); then, or once expired or
// replaced by a newer URL, 410 Gone; an unknown token is 404. It takes no
// operator credential: the token is the credential. HEAD is refused so
// that a link checker cannot spend the token.
func (s *Server) ConfigHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "only GET fetches a config", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		token := r.PathValue("token")
		if b, err := base64.RawURLEncoding.DecodeString(token); err != nil || len(b) != machines.TokenSize {
			http.Error(w, "unknown config token", http.StatusNotFound)
			return
		}
		body, m, err := s.o.Machines.FetchConfig(r.Context(), token, s.o.Configs.Render)
		var te *lifecycle.TransitionError
		switch {
		case err == nil:
		case errors.Is(err, store.ErrNotFound):
			http.Error(w, "unknown config token", http.StatusNotFound)
			return
		case errors.Is(err, store.ErrUsed):
			http.Error(w, "this config URL was used already: a config is handed out once", http.StatusGone)
			return
		case errors.Is(err, store.ErrRevoked):
			http.Error(w, "this config URL was replaced by a newer one", http.StatusGone)
			return
		case errors.Is(err, store.ErrExpired):
			http.Error(w, "this config URL has expired", http.StatusGone)
			return
		case errors.As(err, &te):
			http.Error(w, "this machine cannot take a config: "+te.Error(), http.StatusGone)
			return
		default:
			if r.Context().Err() == nil {
				s.log.Error("config fetch failed", "err", err)
			}
			http.Error(w, internalMessage, http.StatusInternalServerError)
			return
		}
		s.log.Info("config fetched", "machine", m.ID, "role", m.Role, "bytes", len(body), "ip", peerIP(r.RemoteAddr))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body)
	})
}

// internalMessage is all a caller learns of an internal error.
const internalMessage = "internal error; see the daemon's log"
