package webhook_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/attestation/attestation/extensions/webhook"
)

// A receiver checks the signature over the raw body before it trusts
// anything in it; this is the handler from the package documentation.
func Example_receiver() {
	secret := "a long random string"
	handle := func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		if !hmac.Equal([]byte(r.Header.Get("X-Attestation-Signature")), []byte(want)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var ev struct {
			Event     string    `json:"event"`
			ID        string    `json:"id"`
			MachineID string    `json:"machine_id"`
			Timestamp time.Time `json:"timestamp"`
		}
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		fmt.Println("accepted", ev.Event, "for", ev.MachineID)
		w.WriteHeader(http.StatusNoContent)
	}

	body := `{"event":"node.online","id":"e1","machine_id":"m1","timestamp":"2026-01-02T03:04:05Z"}`
	for _, key := range []string{secret, "another secret"} {
		req := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
		req.Header.Set("X-Attestation-Signature", webhook.Sign([]byte(key), []byte(body)))
		rec := httptest.NewRecorder()
		handle(rec, req)
		fmt.Println(rec.Code)
	}
	// Output:
	// accepted node.online for m1
	// 204
	// 401
}
