package tags

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/attestation/attestation/extensions"
)

// Tag is a key, and maybe a value, on a machine, as the API returns it.
type Tag struct {
	ID        string    `json:"id"`
	MachineID string    `json:"machine_id"`
	Key       string    `json:"key"`
	Value     string    `json:"value"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

var (
	keyRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9._/-]{0,62}$`)
	uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

const maxValueLen = 253

// check returns why key and value do not make a tag, or nil.
func check(key, value string) error {
	if !keyRE.MatchString(key) {
		return fmt.Errorf("key %q: want 1 to 63 lowercase letters, digits, '.', '_', '/' or '-', starting with a letter or digit", key)
	}
	switch {
	case !utf8.ValidString(value):
		return fmt.Errorf("value of %s: not valid UTF-8", key)
	case utf8.RuneCountInString(value) > maxValueLen:
		return fmt.Errorf("value of %s: longer than %d characters", key, maxValueLen)
	case strings.TrimSpace(value) != value:
		return fmt.Errorf("value of %s: begins or ends with white space", key)
	case strings.IndexFunc(value, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return fmt.Errorf("value of %s: %q has a character that is not printable", key, value)
	}
	return nil
}

// Routes implements extensions.Router.
func (e *Extension) Routes(mux *http.ServeMux) {
	mux.Handle("GET /machines", extensions.Require(extensions.Viewer, e.handler(e.selectMachines)))
	mux.Handle("GET /machines/{machine_id}/tags", extensions.Require(extensions.Viewer, e.handler(e.list)))
	mux.Handle("POST /machines/{machine_id}/tags", extensions.Require(extensions.Operator, e.handler(e.add)))
	mux.Handle("DELETE /machines/{machine_id}/tags/{tag_id}", extensions.Require(extensions.Operator, e.handler(e.remove)))
}

// apiError is an error the caller made, with its HTTP status.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &apiError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

// handler writes the error fn returns in the core REST API's JSON shape.
// Any error but an apiError is the daemon's own: it is logged, and the
// caller learns no more than the core API would tell.
func (e *Extension) handler(fn func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := fn(w, r)
		var ae *apiError
		switch {
		case err == nil:
		case errors.As(err, &ae):
			extensions.WriteError(w, ae.status, ae.msg)
		default:
			e.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			extensions.WriteError(w, http.StatusInternalServerError, "internal error; see the daemon's log")
		}
	})
}

// writeJSON answers v. A write that fails means the caller left: there is
// no one to tell.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// machine returns the ID of the request's machine, which must exist. The
// core's machines table is read, never written.
func (e *Extension) machine(r *http.Request) (string, error) {
	id := strings.ToLower(r.PathValue("machine_id"))
	if !uuidRE.MatchString(id) {
		return "", badRequest("machine ID %q: want a UUID such as 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a", r.PathValue("machine_id"))
	}
	var one int
	err := e.db.QueryRowContext(r.Context(), `SELECT 1 FROM machines WHERE id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return "", notFound("machine %s not found", id)
	}
	if err != nil {
		return "", fmt.Errorf("look up machine %s: %w", id, err)
	}
	return id, nil
}

// parseSelector reads KEY or KEY=VALUE: a machine with the key (any
// value), or with the key set to the value.
func parseSelector(sel string) (key, value string, any bool, err error) {
	key, value, hasValue := strings.Cut(sel, "=")
	if err := check(key, value); err != nil {
		return "", "", false, fmt.Errorf("tag %q: %w", sel, err)
	}
	return key, value, !hasValue, nil
}

// selectMachines answers {"machine_ids": [...]}: the machines that carry
// every ?tag=KEY or ?tag=KEY=VALUE given, sorted.
func (e *Extension) selectMachines(w http.ResponseWriter, r *http.Request) error {
	sels := r.URL.Query()["tag"]
	if len(sels) == 0 {
		return badRequest("give at least one tag: ?tag=KEY or ?tag=KEY=VALUE")
	}
	var ids map[string]bool
	for _, sel := range sels {
		key, value, anyValue, err := parseSelector(sel)
		if err != nil {
			return badRequest("%v", err)
		}
		rows, err := e.db.QueryContext(r.Context(), `SELECT machine_id FROM extension_tags_tags
			WHERE key = ? AND (? OR value = ?)`, key, anyValue, value)
		if err != nil {
			return fmt.Errorf("select machines tagged %s: %w", sel, err)
		}
		matched := map[string]bool{}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("select machines tagged %s: %w", sel, err)
			}
			if ids == nil || ids[id] {
				matched[id] = true
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("select machines tagged %s: %w", sel, err)
		}
		ids = matched
	}
	out := make([]string, 0, len(ids))
	for id := range ids {
		out = append(out, id)
	}
	slices.Sort(out)
	writeJSON(w, http.StatusOK, map[string][]string{"machine_ids": out})
	return nil
}

// list answers {"tags": [...]}, sorted by key.
func (e *Extension) list(w http.ResponseWriter, r *http.Request) error {
	machineID, err := e.machine(r)
	if err != nil {
		return err
	}
	rows, err := e.db.QueryContext(r.Context(), `SELECT id, key, value, created_by, created_at
		FROM extension_tags_tags WHERE machine_id = ? ORDER BY key`, machineID)
	if err != nil {
		return fmt.Errorf("list tags of machine %s: %w", machineID, err)
	}
	defer rows.Close()
	tags := []Tag{}
	for rows.Next() {
		t := Tag{MachineID: machineID}
		var created int64
		if err := rows.Scan(&t.ID, &t.Key, &t.Value, &t.CreatedBy, &created); err != nil {
			return fmt.Errorf("list tags of machine %s: %w", machineID, err)
		}
		t.CreatedAt = time.Unix(0, created).UTC()
		tags = append(tags, t)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list tags of machine %s: %w", machineID, err)
	}
	writeJSON(w, http.StatusOK, map[string][]Tag{"tags": tags})
	return nil
}

// add creates a tag (201) or, when the machine has the key already, sets
// its value (200); the tag keeps its ID and who created it when.
func (e *Extension) add(w http.ResponseWriter, r *http.Request) error {
	machineID, err := e.machine(r)
	if err != nil {
		return err
	}
	var req struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return badRequest(`request body: want a JSON object like {"key": "rack", "value": "r1"}: %v`, err)
	}
	if dec.Decode(&struct{}{}) != io.EOF {
		return badRequest("request body: more than one JSON value")
	}
	if err := check(req.Key, req.Value); err != nil {
		return badRequest("%v", err)
	}
	t := Tag{
		ID:        uuid.NewString(),
		MachineID: machineID,
		Key:       req.Key,
		Value:     req.Value,
		CreatedBy: extensions.Caller(r.Context()),
		CreatedAt: time.Now().UTC(),
	}
	// One statement, so two callers adding the same key cannot both
	// insert; the ID it returns tells an update from an insert.
	var id string
	var created int64
	err = e.db.QueryRowContext(r.Context(), `INSERT INTO extension_tags_tags
		(id, machine_id, key, value, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (machine_id, key) DO UPDATE SET value = excluded.value
		RETURNING id, created_by, created_at`,
		t.ID, t.MachineID, t.Key, t.Value, t.CreatedBy, t.CreatedAt.UnixNano()).Scan(&id, &t.CreatedBy, &created)
	if err != nil {
		return fmt.Errorf("tag machine %s with %s: %w", machineID, t.Key, err)
	}
	status := http.StatusCreated
	if id != t.ID {
		status, t.ID = http.StatusOK, id
	}
	t.CreatedAt = time.Unix(0, created).UTC()
	writeJSON(w, status, t)
	return nil
}

// remove deletes one of the machine's tags by ID.
func (e *Extension) remove(w http.ResponseWriter, r *http.Request) error {
	machineID, err := e.machine(r)
	if err != nil {
		return err
	}
	tagID := strings.ToLower(r.PathValue("tag_id"))
	if !uuidRE.MatchString(tagID) {
		return badRequest("tag ID %q: want a UUID such as 9c1d7f2e-3b4a-4c5d-8e6f-7a8b9c0d1e2f", r.PathValue("tag_id"))
	}
	res, err := e.db.ExecContext(r.Context(),
		`DELETE FROM extension_tags_tags WHERE id = ? AND machine_id = ?`, tagID, machineID)
	if err != nil {
		return fmt.Errorf("remove tag %s of machine %s: %w", tagID, machineID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("remove tag %s of machine %s: %w", tagID, machineID, err)
	} else if n == 0 {
		return notFound("machine %s has no tag %s", machineID, tagID)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
