package tags_test

import (
	"database/sql"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/mattn/go-sqlite3"

	"github.com/attestation/attestation/cli"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/extensions"
	"github.com/attestation/attestation/extensions/extensiontest"
	"github.com/attestation/attestation/extensions/tags"
)

// caller is the subject of the kit's admin token.
const caller = "admin-token"

func tagsPath(machineID string) string { return "/api/v1/tags/machines/" + machineID + "/tags" }

// apiError is the core REST API's error shape.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details []any  `json:"details"`
}

// wantError fails unless the answer is an error in the REST API's shape
// with the status and gRPC code given and a message containing msg.
func wantError(t *testing.T, status int, body []byte, wantStatus, wantCode int, msg string) {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	if status != wantStatus || e.Code != wantCode || !strings.Contains(e.Message, msg) || e.Details == nil {
		t.Errorf("got HTTP %d %s, want HTTP %d with code %d, details [] and a message containing %q", status, body, wantStatus, wantCode, msg)
	}
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return v
}

func addTag(t *testing.T, kit *extensiontest.Kit, machineID, key, value string, wantStatus int) tags.Tag {
	t.Helper()
	status, body := kit.Do(t, http.MethodPost, tagsPath(machineID), map[string]any{"key": key, "value": value})
	if status != wantStatus {
		t.Fatalf("add %s=%s: got HTTP %d %s, want %d", key, value, status, body, wantStatus)
	}
	return decode[tags.Tag](t, body)
}

func listTags(t *testing.T, kit *extensiontest.Kit, machineID string) []tags.Tag {
	t.Helper()
	status, body := kit.Do(t, http.MethodGet, tagsPath(machineID), nil)
	if status != http.StatusOK {
		t.Fatalf("list tags: got HTTP %d %s", status, body)
	}
	resp := decode[struct{ Tags []tags.Tag }](t, body)
	if resp.Tags == nil {
		t.Fatalf("list tags: got %s, want a \"tags\" array", body)
	}
	return resp.Tags
}

// keys returns "key=value" of each tag, in order.
func keys(ts []tags.Tag) string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Key+"="+t.Value)
	}
	return strings.Join(out, " ")
}

// send is a request the kit's Do cannot make: a raw body, or no token.
func send(t *testing.T, kit *extensiontest.Kit, method, path, body, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, kit.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// countRows counts the rows of the extension's table, read from the
// daemon's database file.
func countRows(t *testing.T, kit *extensiontest.Kit) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+kit.DatabasePath()+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM extension_tags_tags`).Scan(&n); err != nil {
		t.Fatalf("count tags: %v", err)
	}
	return n
}

func TestInfo(t *testing.T) {
	info := (&tags.Extension{}).Info()
	if info.Name != "tags" || info.Version != "1.0.0" || info.Description == "" {
		t.Errorf("got %+v, want tags 1.0.0 with a description", info)
	}
	registered := false
	for _, e := range extensions.All() {
		registered = registered || e.Info().Name == "tags"
	}
	if !registered {
		t.Error("importing the package did not register the extension")
	}
}

func TestMigrationsFollowTheRules(t *testing.T) {
	fsys := (&tags.Extension{}).Migrations()
	files, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 || files[0] != "0001_create_tags.sql" {
		t.Fatalf("got migrations %v, want 0001_create_tags.sql first", files)
	}
	for _, name := range files {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			t.Fatal(err)
		}
		if err := extensions.CheckMigration("tags", string(b)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestDaemonLoadsIt(t *testing.T) {
	kit := extensiontest.Start(t, &tags.Extension{})

	status, body := kit.Do(t, http.MethodGet, "/api/v1/extensions", nil)
	if status != http.StatusOK {
		t.Fatalf("list extensions: HTTP %d %s", status, body)
	}
	// The REST API answers the map of extensions by name.
	exts := decode[map[string]struct{ Version, Status, Description string }](t, body)
	got, ok := exts["tags"]
	if !ok || got.Version != "1.0.0" || got.Status != "running" || got.Description == "" {
		t.Errorf("got extensions %s, want tags 1.0.0 running with its description", body)
	}

	db, err := sql.Open("sqlite3", "file:"+kit.DatabasePath()+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, obj := range []struct{ kind, name string }{
		{"table", "extension_tags_tags"},
		{"index", "extension_tags_by_machine"},
	} {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = ? AND name = ?`, obj.kind, obj.name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("%s %s: not in the database", obj.kind, obj.name)
		}
	}
}

func TestSettings(t *testing.T) {
	for _, c := range []struct {
		name, settings, wantStatus string
	}{
		{"empty", `{}`, "running"},
		{"unknown setting", `{"colour": "red"}`, "failed: provision: settings (extensions: tags:): it takes none"},
	} {
		t.Run(c.name, func(t *testing.T) {
			kit := extensiontest.StartWith(t, extensiontest.Options{Config: func(cfg *config.Config) {
				cfg.Extensions = map[string]json.RawMessage{"tags": json.RawMessage(c.settings)}
			}}, &tags.Extension{})
			_, body := kit.Do(t, http.MethodGet, "/api/v1/extensions", nil)
			exts := decode[map[string]struct{ Status string }](t, body)
			if got := exts["tags"].Status; !strings.HasPrefix(got, c.wantStatus) {
				t.Errorf("got status %q, want %q", got, c.wantStatus)
			}
		})
	}
}

func TestAddListRemove(t *testing.T) {
	kit := extensiontest.Start(t, &tags.Extension{})
	id := kit.RegisterMachine(t)
	before := time.Now()

	rack := addTag(t, kit, id, "rack", "r1", http.StatusCreated)
	if _, err := uuid.Parse(rack.ID); err != nil {
		t.Errorf("got tag ID %q, want a UUID", rack.ID)
	}
	if rack.MachineID != id || rack.Key != "rack" || rack.Value != "r1" || rack.CreatedBy != caller {
		t.Errorf("got %+v, want rack=r1 on machine %s created by %s", rack, id, caller)
	}
	if rack.CreatedAt.Before(before.Add(-time.Second)) || rack.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("got created_at %v, want about now", rack.CreatedAt)
	}
	addTag(t, kit, id, "gpu", "", http.StatusCreated)
	addTag(t, kit, id, "zone", "eu-west 1", http.StatusCreated)
	addTag(t, kit, id, strings.Repeat("k", 63), strings.Repeat("v", 253), http.StatusCreated)
	addTag(t, kit, id, "a.b_c/d-0", "ünïcode = fine", http.StatusCreated)

	got := listTags(t, kit, id)
	want := "a.b_c/d-0=ünïcode = fine gpu= " + strings.Repeat("k", 63) + "=" + strings.Repeat("v", 253) + " rack=r1 zone=eu-west 1"
	if keys(got) != want {
		t.Errorf("got tags %s, want %s (sorted by key)", keys(got), want)
	}

	// Adding a key the machine has changes its value; the tag stays.
	updated := addTag(t, kit, id, "rack", "r2", http.StatusOK)
	if updated.ID != rack.ID || updated.Value != "r2" || updated.CreatedBy != caller || !updated.CreatedAt.Equal(rack.CreatedAt) {
		t.Errorf("got %+v, want %+v with value r2", updated, rack)
	}
	if n := len(listTags(t, kit, id)); n != 5 {
		t.Errorf("got %d tags after the update, want 5", n)
	}

	status, body := kit.Do(t, http.MethodDelete, tagsPath(id)+"/"+rack.ID, nil)
	if status != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("remove: got HTTP %d %s, want 204 and no body", status, body)
	}
	for _, tag := range listTags(t, kit, id) {
		if tag.Key == "rack" {
			t.Errorf("rack is still there after its removal")
		}
	}
	status, body = kit.Do(t, http.MethodDelete, tagsPath(id)+"/"+rack.ID, nil)
	wantError(t, status, body, http.StatusNotFound, 5, "has no tag "+rack.ID)
}

func TestTagsBelongToTheirMachine(t *testing.T) {
	kit := extensiontest.Start(t, &tags.Extension{})
	mine, other := kit.RegisterMachine(t), kit.RegisterMachine(t)
	tag := addTag(t, kit, mine, "rack", "r1", http.StatusCreated)
	addTag(t, kit, other, "rack", "r9", http.StatusCreated)

	status, body := kit.Do(t, http.MethodDelete, tagsPath(other)+"/"+tag.ID, nil)
	wantError(t, status, body, http.StatusNotFound, 5, "has no tag")
	if got := keys(listTags(t, kit, mine)); got != "rack=r1" {
		t.Errorf("got %s on the tag's machine, want rack=r1 still", got)
	}
	if got := keys(listTags(t, kit, other)); got != "rack=r9" {
		t.Errorf("got %s on the other machine, want rack=r9", got)
	}
}

func TestUnknownMachine(t *testing.T) {
	kit := extensiontest.Start(t, &tags.Extension{})
	unknown := uuid.NewString()
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, tagsPath(unknown), nil},
		{http.MethodPost, tagsPath(unknown), map[string]string{"key": "rack"}},
		{http.MethodDelete, tagsPath(unknown) + "/" + uuid.NewString(), nil},
	} {
		t.Run(c.method, func(t *testing.T) {
			status, body := kit.Do(t, c.method, c.path, c.body)
			wantError(t, status, body, http.StatusNotFound, 5, "machine "+unknown+" not found")
		})
	}
	if n := countRows(t, kit); n != 0 {
		t.Errorf("got %d tags in the database, want none", n)
	}
}

func TestBadInput(t *testing.T) {
	kit := extensiontest.Start(t, &tags.Extension{})
	id := kit.RegisterMachine(t)
	for _, c := range []struct {
		name               string
		method, path, body string
		msg                string
	}{
		{"machine ID not a UUID", http.MethodGet, tagsPath("not-a-uuid"), "", `machine ID "not-a-uuid"`},
		{"machine ID escaped", http.MethodPost, tagsPath("%2e%2e"), `{"key": "rack"}`, `machine ID ".."`},
		{"tag ID not a UUID", http.MethodDelete, tagsPath(id) + "/rack", "", `tag ID "rack"`},
		{"malformed JSON", http.MethodPost, tagsPath(id), `{"key": "rack"`, "request body"},
		{"not an object", http.MethodPost, tagsPath(id), `["rack"]`, "request body"},
		{"empty body", http.MethodPost, tagsPath(id), ``, "request body"},
		{"unknown field", http.MethodPost, tagsPath(id), `{"key": "rack", "colour": "red"}`, `unknown field "colour"`},
		{"two objects", http.MethodPost, tagsPath(id), `{"key": "rack"} {"key": "zone"}`, "more than one JSON value"},
		{"key a number", http.MethodPost, tagsPath(id), `{"key": 5}`, "request body"},
		{"no key", http.MethodPost, tagsPath(id), `{"value": "r1"}`, `key ""`},
		{"key uppercase", http.MethodPost, tagsPath(id), `{"key": "Rack"}`, `key "Rack"`},
		{"key starts with a dash", http.MethodPost, tagsPath(id), `{"key": "-rack"}`, `key "-rack"`},
		{"key with a space", http.MethodPost, tagsPath(id), `{"key": "my rack"}`, `key "my rack"`},
		{"key too long", http.MethodPost, tagsPath(id), `{"key": "` + strings.Repeat("k", 64) + `"}`, "key"},
		{"value too long", http.MethodPost, tagsPath(id), `{"key": "rack", "value": "` + strings.Repeat("v", 254) + `"}`, "longer than 253"},
		{"value with a leading space", http.MethodPost, tagsPath(id), `{"key": "rack", "value": " r1"}`, "white space"},
		{"value with a trailing space", http.MethodPost, tagsPath(id), `{"key": "rack", "value": "r1 "}`, "white space"},
		{"value with a newline", http.MethodPost, tagsPath(id), `{"key": "rack", "value": "r\n1"}`, "not printable"},
		{"value with a NUL", http.MethodPost, tagsPath(id), `{"key": "rack", "value": "r\u00001"}`, "not printable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := send(t, kit, c.method, c.path, c.body, kit.Token)
			wantError(t, status, body, http.StatusBadRequest, 3, c.msg)
		})
	}
	if n := countRows(t, kit); n != 0 {
		t.Errorf("got %d tags in the database after bad requests, want none", n)
	}
}

func TestNeedsAToken(t *testing.T) {
	kit := extensiontest.Start(t, &tags.Extension{})
	id := kit.RegisterMachine(t)
	for _, c := range []struct{ name, token, msg string }{
		{"none", "", "no bearer token"},
		{"wrong", "not-the-token", "invalid bearer token"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := send(t, kit, http.MethodPost, tagsPath(id), `{"key": "rack"}`, c.token)
			wantError(t, status, body, http.StatusUnauthorized, 16, c.msg)
			status, body = send(t, kit, http.MethodGet, tagsPath(id), "", c.token)
			wantError(t, status, body, http.StatusUnauthorized, 16, c.msg)
		})
	}
	if n := countRows(t, kit); n != 0 {
		t.Errorf("got %d tags in the database, want none", n)
	}
}

// run runs the CLI and fails unless it succeeds.
func run(t *testing.T, kit *extensiontest.Kit, args ...string) string {
	t.Helper()
	res := kit.CLI(args...)
	if res.Code != 0 || res.Stderr != "" {
		t.Fatalf("attestation %s: exit %d, stderr %q", strings.Join(args, " "), res.Code, res.Stderr)
	}
	return res.Stdout
}

func TestCLI(t *testing.T) {
	kit := extensiontest.Start(t, &tags.Extension{})
	id := kit.RegisterMachine(t)

	out := run(t, kit, "tag", "add", id, "rack=r1", "gpu", "note=a=b c")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "CREATED BY") {
		t.Fatalf("tag add: got\n%s\nwant a header and 3 rows", out)
	}
	for i, want := range []string{"rack  r1", "gpu   -", "note  a=b c"} {
		if !strings.Contains(lines[i+1], want) || !strings.Contains(lines[i+1], caller) {
			t.Errorf("tag add: row %d is %q, want it to hold %q and %s", i+1, lines[i+1], want, caller)
		}
	}

	var listed []tags.Tag
	if err := json.Unmarshal([]byte(run(t, kit, "tag", "list", id, "-o", "json")), &listed); err != nil {
		t.Fatalf("tag list -o json: %v", err)
	}
	if got := keys(listed); got != "gpu= note=a=b c rack=r1" {
		t.Errorf("tag list -o json: got %s, want gpu= note=a=b c rack=r1", got)
	}
	for _, tag := range listed {
		if tag.MachineID != id || tag.CreatedBy != caller || tag.CreatedAt.IsZero() {
			t.Errorf("tag list -o json: got %+v, want machine %s, created by %s, with a time", tag, id, caller)
		}
	}
	if out := run(t, kit, "tag", "list", id, "-o", "yaml"); !strings.Contains(out, "key: rack") || !strings.Contains(out, "created_by: "+caller) {
		t.Errorf("tag list -o yaml: got\n%s", out)
	}
	out = run(t, kit, "tag", "list", id)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 4 || !strings.Contains(lines[1], "gpu") || !strings.Contains(lines[3], "rack") {
		t.Errorf("tag list: got\n%s\nwant a header and gpu, note, rack", out)
	}

	// Adding a key again changes its value; -o json prints what was added.
	var added []tags.Tag
	if err := json.Unmarshal([]byte(run(t, kit, "tag", "add", id, "rack=r2", "-o", "json")), &added); err != nil {
		t.Fatal(err)
	}
	rack := listed[2]
	if len(added) != 1 || added[0].ID != rack.ID || added[0].Value != "r2" {
		t.Errorf("tag add rack=r2: got %+v, want tag %s with value r2", added, rack.ID)
	}

	// By key, then by ID.
	if out := run(t, kit, "tag", "remove", id, "rack"); !strings.Contains(out, "Removed tag rack ("+rack.ID+")") {
		t.Errorf("tag remove rack: got %q", out)
	}
	run(t, kit, "tag", "rm", id, listed[0].ID)
	if got := keys(listTags(t, kit, id)); got != "note=a=b c" {
		t.Errorf("after removing rack and gpu: got %s, want note=a=b c", got)
	}
	bare := kit.RegisterMachine(t)
	if res := kit.CLI("tag", "list", bare); res.Code != 0 || !strings.HasPrefix(res.Stdout, "ID ") || strings.Count(res.Stdout, "\n") != 1 || res.Stderr != "no tags\n" {
		t.Errorf("tag list of a machine without tags: got exit %d, stdout %q, stderr %q; want the header and \"no tags\" on stderr", res.Code, res.Stdout, res.Stderr)
	}
	if out := run(t, kit, "tag", "list", bare, "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("tag list -o json of a machine without tags: got %q, want []", out)
	}
}

// machines list --tag, a flag the extension adds to a core command.
func TestMachinesListByTag(t *testing.T) {
	kit := extensiontest.Start(t, &tags.Extension{})
	r1a, r1b, r2, none := kit.RegisterMachine(t), kit.RegisterMachine(t), kit.RegisterMachine(t), kit.RegisterMachine(t)
	run(t, kit, "tag", "add", r1a, "rack=r1", "gpu")
	run(t, kit, "tag", "add", r1b, "rack=r1")
	run(t, kit, "tag", "add", r2, "rack=r2", "gpu")
	ids := func(args ...string) string {
		t.Helper()
		var ms []struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(run(t, kit, append([]string{"machines", "list", "-o", "json"}, args...)...)), &ms); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range ms {
			out = append(out, m.ID)
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	sorted := func(xs ...string) string {
		slices.Sort(xs)
		return strings.Join(xs, " ")
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no tag", nil, sorted(r1a, r1b, r2, none)},
		{"key and value", []string{"--tag", "rack=r1"}, sorted(r1a, r1b)},
		{"key alone", []string{"--tag", "gpu"}, sorted(r1a, r2)},
		{"both", []string{"--tag", "rack=r1", "--tag", "gpu"}, r1a},
		{"an empty value", []string{"--tag", "gpu="}, sorted(r1a, r2)},
		{"none match", []string{"--tag", "rack=r9"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := ids(tt.args...); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	res := kit.CLI("machines", "list", "--tag", "Rack=r1")
	if res.Code != 1 || !strings.Contains(res.Stderr, `--tag: tag "Rack=r1": key "Rack": want`) {
		t.Errorf("a bad tag: exit %d, stderr %q; want 1 naming the tag and what a key must be", res.Code, res.Stderr)
	}
	res = kit.CLI("machines", "list", "--help")
	if !strings.Contains(res.Stdout, "--tag stringArray") || !strings.Contains(res.Stdout, "KEY=VALUE") {
		t.Errorf("machines list --help: want the --tag flag in\n%s", res.Stdout)
	}
	status, body := kit.Do(t, http.MethodGet, "/api/v1/tags/machines", nil)
	wantError(t, status, body, http.StatusBadRequest, 3, "give at least one tag")
}

func TestCLIErrors(t *testing.T) {
	kit := extensiontest.Start(t, &tags.Extension{})
	id := kit.RegisterMachine(t)
	unknown := uuid.NewString()
	noToken := map[string]string{cli.EnvURL: kit.URL}
	badToken := map[string]string{cli.EnvURL: kit.URL, cli.EnvToken: "not-the-token"}
	unreachable := map[string]string{cli.EnvURL: "http://127.0.0.1:1", cli.EnvToken: kit.Token}
	bare := extensiontest.Start(t) // a daemon built without the extension
	withoutTags := map[string]string{cli.EnvURL: bare.URL, cli.EnvToken: bare.Token}
	for _, c := range []struct {
		name string
		env  map[string]string // nil: the kit's URL and token
		args []string
		want string // the first line of stderr
	}{
		{"no token", noToken, []string{"tag", "list", id}, "attestation: not logged in: the daemon at "},
		{"no token to add", noToken, []string{"tag", "add", id, "rack=r1"}, "attestation: not logged in:"},
		{"wrong token", badToken, []string{"tag", "list", id}, "attestation: the daemon at " + kit.URL + " did not accept the token (invalid bearer token)"},
		{"daemon unreachable", unreachable, []string{"tag", "list", id}, "attestation: cannot reach the daemon at http://127.0.0.1:1: dial tcp 127.0.0.1:1"},
		{"daemon without tags", withoutTags, []string{"tag", "list", id}, "attestation: the daemon at " + bare.URL + " answered 404 Not Found to GET /api/v1/tags/machines/" + id + "/tags: is it built with the tags extension?"},
		{"unknown machine", nil, []string{"tag", "list", unknown}, "attestation: machine " + unknown + " not found"},
		{"unknown machine to add", nil, []string{"tag", "add", unknown, "rack=r1"}, "attestation: add rack: machine " + unknown + " not found"},
		{"bad machine ID", nil, []string{"tag", "list", "nope"}, `attestation: machine ID "nope": want a UUID`},
		{"bad key", nil, []string{"tag", "add", id, "rack=r1", "Zone=a"}, `attestation: key "Zone": want 1 to 63 lowercase letters`},
		{"bad value", nil, []string{"tag", "add", id, "rack=r1", "zone= a"}, "attestation: value of zone: begins or ends with white space"},
		{"key twice", nil, []string{"tag", "add", id, "rack=r1", "rack=r2"}, "attestation: key rack is given twice"},
		{"no tags to add", nil, []string{"tag", "add", id}, "attestation: attestation tag add: missing KEY[=VALUE]..."},
		{"no machine", nil, []string{"tag", "list"}, "attestation: attestation tag list: missing MACHINE_ID"},
		{"nothing to remove", nil, []string{"tag", "remove", id}, "attestation: attestation tag remove: missing TAG_ID|KEY"},
		{"too many", nil, []string{"tag", "remove", id, "rack", "zone"}, `attestation: attestation tag remove: unexpected argument "zone" (it takes MACHINE_ID TAG_ID|KEY)`},
		{"no such tag", nil, []string{"tag", "remove", id, "rack"}, `attestation: machine ` + id + ` has no tag with ID or key "rack"`},
		{"unknown subcommand", nil, []string{"tag", "show", id}, `attestation: unknown command "show" for "attestation tag"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var res extensiontest.Result
			if c.env == nil {
				res = kit.CLI(c.args...)
			} else {
				res = kit.CLIEnv(c.env, c.args...)
			}
			first, _, _ := strings.Cut(res.Stderr, "\n")
			if res.Code != 1 || !strings.HasPrefix(first, c.want) || res.Stdout != "" {
				t.Errorf("got exit %d, stdout %q, stderr %q; want exit 1, no output and stderr starting %q", res.Code, res.Stdout, res.Stderr, c.want)
			}
		})
	}
	if n := countRows(t, kit); n != 0 {
		t.Errorf("got %d tags in the database after failed commands, want none", n)
	}
}

func TestCLIHelp(t *testing.T) {
	kit := extensiontest.Start(t, &tags.Extension{})
	out := run(t, kit, "tag")
	for _, want := range []string{"list", "add", "remove", "attestation tag add"} {
		if !strings.Contains(out, want) {
			t.Errorf("attestation tag: got\n%s\nwant it to mention %q", out, want)
		}
	}
	if out := run(t, kit, "--help"); !strings.Contains(out, "tag") {
		t.Errorf("attestation --help: got\n%s\nwant the tag group listed", out)
	}
}
