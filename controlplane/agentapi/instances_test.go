//go:build cgo

package agentapi_test

// Several instances of the control plane over one database, as behind a
// TCP load balancer: each its own agent API, with its own memory, over
// one database (on PostgreSQL each with its own store, as processes). A challenge one issues, another takes the answer to; a
// replay is refused on every one; what did not come from an instance
// sharing the key is refused before anything is written.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/controlplane/agentapi"
	"github.com/attestation/attestation/controlplane/api"
	"github.com/attestation/attestation/controlplane/attest"
	"github.com/attestation/attestation/controlplane/auth"
	"github.com/attestation/attestation/controlplane/configs"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/internal/pgtest"
	"github.com/attestation/attestation/internal/testenv"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// instances are agent APIs over one database.
type instances struct {
	// store returns the store of a new instance: on SQLite the one store
	// (one process holds the file), on PostgreSQL a store of its own, as
	// each process has.
	store func(t *testing.T) *store.Store
	// first is the first instance's store, for looking at the database.
	first *store.Store
	// key is the challenge key the instances share.
	key []byte
}

func newInstances(t *testing.T, store func(t *testing.T) *store.Store) *instances {
	t.Helper()
	secret := make([]byte, machines.ConfigTokenKeySize)
	rand.Read(secret)
	key, err := agentapi.DeriveChallengeKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	return &instances{store: store, first: store(t), key: key}
}

// openStore opens a store, closed when the test ends.
func openStore(t *testing.T, open func(context.Context, string) (*store.Store, error), db string) *store.Store {
	t.Helper()
	st, err := open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func onSQLite(t *testing.T) *instances {
	st := openStore(t, store.Open, filepath.Join(t.TempDir(), "attestation.db"))
	return newInstances(t, func(*testing.T) *store.Store { return st })
}

func onPostgres(t *testing.T) *instances {
	dsn := pgtest.DSN(t)
	return newInstances(t, func(t *testing.T) *store.Store { return openStore(t, store.OpenPostgres, dsn) })
}

// TestInstances runs the instance tests over one SQLite database;
// TestPostgresInstances over one PostgreSQL database.
func TestInstances(t *testing.T) { testInstances(t, onSQLite) }

func TestPostgresInstances(t *testing.T) {
	testenv.Integration(t, "agent API instances over one PostgreSQL: a challenge one issued answered on another, a replay refused on every one")
	testInstances(t, onPostgres)
}

func testInstances(t *testing.T, newIn func(t *testing.T) *instances) {
	t.Run("answered on another instance", func(t *testing.T) { testChallengeOnAnotherInstance(t, newIn(t)) })
	t.Run("a refused answer spends the challenge everywhere", func(t *testing.T) { testRefusedAnswerSpendsChallenge(t, newIn(t)) })
	t.Run("refused before any write", func(t *testing.T) { testChallengeRefusedBeforeAnyWrite(t, newIn(t)) })
}

// start serves one more instance over the store, its challenges sealed
// under key (nil: the shared one), each challenge lasting ttl (0: the
// default), and returns its agent client and its operator client.
func (in *instances) start(t *testing.T, key []byte, ttl time.Duration) (attestationv1connect.AgentServiceClient, attestationv1connect.MachineServiceClient) {
	t.Helper()
	if key == nil {
		key = in.key
	}
	st := in.store(t)
	svc := machines.New(st, nil)
	cfgs := configs.NewService(st)
	agent, err := agentapi.New(agentapi.Options{Store: st, Machines: svc, Configs: cfgs,
		Policy: attest.Policy{Mode: attest.ModeAny}, ChallengeKey: key, ChallengeTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	limits := api.NewLimits(1<<20, nil, nil)
	h, _, err := api.Handler(api.Options{
		Store: st, Machines: svc, Configs: cfgs, Agent: agent, Committed: &events.Signal{},
		Auth: auth.NewStaticToken("instances-token", "admin"), Limits: limits,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(limits.Middleware(h))
	t.Cleanup(srv.Close)
	return attestationv1connect.NewAgentServiceClient(srv.Client(), srv.URL),
		attestationv1connect.NewMachineServiceClient(srv.Client(), srv.URL, connect.WithInterceptors(bearer("instances-token")))
}

// usedChallenges counts the challenges recorded as used.
func (in *instances) usedChallenges(t *testing.T) int {
	t.Helper()
	var n int
	if err := in.first.ReadDB().QueryRowContext(t.Context(), `SELECT count(*) FROM used_challenges`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func register(t *testing.T, c attestationv1connect.AgentServiceClient, req *attestationv1.RegisterRequest) *attestationv1.RegisterResponse {
	t.Helper()
	resp, err := c.Register(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	return resp.Msg
}

func attestOn(ctx context.Context, c attestationv1connect.AgentServiceClient, req *attestationv1.AttestRequest) error {
	_, err := c.Attest(ctx, connect.NewRequest(req))
	return err
}

// state returns the machine's state.
func state(t *testing.T, ms attestationv1connect.MachineServiceClient, id string) string {
	t.Helper()
	resp, err := ms.GetMachine(t.Context(), connect.NewRequest(&attestationv1.GetMachineRequest{Id: id}))
	if err != nil {
		t.Fatalf("get machine %s: %v", id, err)
	}
	return resp.Msg.Machine.State
}

// testChallengeOnAnotherInstance: registered on A, answered on B; the
// answer sent again, to A or B, is refused as used.
func testChallengeOnAnotherInstance(t *testing.T, in *instances) {
	agentA, opsA := in.start(t, nil, 0)
	agentB, opsB := in.start(t, nil, 0)
	a := boot(t, "simulator")

	ch := register(t, agentA, registration(a, nil))
	if len(ch.ChallengeId) > 8192 {
		t.Errorf("a challenge_id of %d bytes, more than AttestRequest carries", len(ch.ChallengeId))
	}
	req := quote(t, a, ch, answer(t, a, ch))
	resp, err := agentB.Attest(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Attest on B of a challenge of A: %v", err)
	}
	if resp.Msg.MachineId != ch.MachineId || resp.Msg.State != "attested" || resp.Msg.SessionToken == "" {
		t.Errorf("Attest on B: %v, want machine %s attested with a session", resp.Msg, ch.MachineId)
	}
	for _, c := range []attestationv1connect.AgentServiceClient{agentA, agentB} {
		wantCode(t, attestOn(t.Context(), c, req), connect.CodeFailedPrecondition, "used already")
	}
	if got := state(t, opsA, ch.MachineId); got != "attested" {
		t.Errorf("A sees the machine %s, want attested", got)
	}
	if n := in.usedChallenges(t); n != 1 {
		t.Errorf("%d challenges recorded as used, want 1", n)
	}

	// Identical answers sent at once to both: one session in all.
	ch = register(t, agentB, registration(a, nil))
	req = quote(t, a, ch, answer(t, a, ch))
	answerAtOnce(t, req, agentA, agentB)
	if got := state(t, opsB, ch.MachineId); got != "attested" {
		t.Errorf("B sees the machine %s, want attested", got)
	}
}

// testRefusedAnswerSpendsChallenge: a wrong secret on A spends the
// challenge on B too: the right answer afterwards is too late.
func testRefusedAnswerSpendsChallenge(t *testing.T, in *instances) {
	agentA, opsA := in.start(t, nil, 0)
	agentB, _ := in.start(t, nil, 0)
	a := boot(t, "simulator")
	ch := register(t, agentA, registration(a, nil))
	good := quote(t, a, ch, answer(t, a, ch))
	bad := &attestationv1.AttestRequest{ChallengeId: good.ChallengeId, Secret: bytes.Clone(good.Secret), Quote: good.Quote, QuoteSignature: good.QuoteSignature, PcrValues: good.PcrValues}
	bad.Secret[0] ^= 1
	wantCode(t, attestOn(t.Context(), agentA, bad), connect.CodePermissionDenied, "wrong secret")
	wantCode(t, attestOn(t.Context(), agentB, good), connect.CodeFailedPrecondition, "used already")
	if got := state(t, opsA, ch.MachineId); got != "registered" {
		t.Errorf("machine %s, want registered", got)
	}
	// The agent's next Register, on either, works.
	ch = register(t, agentB, registration(a, nil))
	if err := attestOn(t.Context(), agentA, quote(t, a, ch, answer(t, a, ch))); err != nil {
		t.Fatalf("Attest after a new Register: %v", err)
	}
}

// testChallengeRefusedBeforeAnyWrite: an altered challenge, one sealed
// under another key and an expired one are refused with a clear error,
// and nothing is written.
func testChallengeRefusedBeforeAnyWrite(t *testing.T, in *instances) {
	agentA, opsA := in.start(t, nil, 0)
	agentB, _ := in.start(t, nil, 0)
	otherKey := make([]byte, agentapi.ChallengeKeySize)
	rand.Read(otherKey)
	agentC, _ := in.start(t, otherKey, 0)
	agentShort, _ := in.start(t, nil, 300*time.Millisecond)
	a := boot(t, "simulator")

	// Altered: one bit of the sealed challenge.
	ch := register(t, agentA, registration(a, nil))
	req := quote(t, a, ch, answer(t, a, ch))
	raw, err := base64.RawURLEncoding.DecodeString(ch.ChallengeId)
	if err != nil {
		t.Fatalf("challenge_id is not base64url: %v", err)
	}
	raw[len(raw)/2] ^= 1
	tampered := &attestationv1.AttestRequest{ChallengeId: base64.RawURLEncoding.EncodeToString(raw), Secret: req.Secret, Quote: req.Quote, QuoteSignature: req.QuoteSignature, PcrValues: req.PcrValues}
	wantCode(t, attestOn(t.Context(), agentB, tampered), connect.CodeNotFound, "unknown challenge", "altered", "call Register")

	// Another control plane's key: C issued it, A and B refuse it.
	chC := register(t, agentC, registration(a, nil))
	reqC := quote(t, a, chC, answer(t, a, chC))
	wantForeign(t, attestOn(t.Context(), agentB, reqC))

	// Expired: issued with a TTL of 300 ms, answered later elsewhere.
	chS := register(t, agentShort, registration(a, nil))
	reqS := quote(t, a, chS, answer(t, a, chS))
	time.Sleep(time.Until(chS.ExpiresAt.AsTime()) + 50*time.Millisecond)
	wantCode(t, attestOn(t.Context(), agentA, reqS), connect.CodeFailedPrecondition, "expired", "call Register")

	if n := in.usedChallenges(t); n != 0 {
		t.Errorf("%d challenges recorded as used after refusals of what no instance issued or of the expired, want 0", n)
	}
	if got := state(t, opsA, ch.MachineId); got != "registered" {
		t.Errorf("machine %s, want registered", got)
	}
	// The untouched answer still works, on an instance that shares the key.
	if err := attestOn(t.Context(), agentB, req); err != nil {
		t.Fatalf("Attest of the genuine answer after the refusals: %v", err)
	}
}

// wantForeign fails unless err refuses a challenge sealed under another
// key, as such; or, when the two keys' one-byte IDs happen to be equal (1
// in 256), as unknown.
func wantForeign(t *testing.T, err error) {
	t.Helper()
	wantCode(t, err, connect.CodeNotFound, "unknown challenge", "call Register")
	if msg := err.Error(); !strings.Contains(msg, "sealed under another key") && !strings.Contains(msg, "altered") {
		t.Errorf("got %q, want it to say the challenge is sealed under another key", msg)
	}
}
