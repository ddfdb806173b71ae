package extensions

import (
	"fmt"
	"regexp"
	"strings"
)

// schemaObject finds the objects a statement creates, alters or drops.
var schemaObject = regexp.MustCompile(`(?is)\b(CREATE\s+(?:UNIQUE\s+|TEMP\s+|TEMPORARY\s+|VIRTUAL\s+)?(TABLE|INDEX|VIEW|TRIGGER)(?:\s+IF\s+NOT\s+EXISTS)?|ALTER\s+(TABLE)|DROP\s+(TABLE|INDEX|VIEW|TRIGGER)(?:\s+IF\s+EXISTS)?)\s+([^\s(;]+)`)

// sqlComment matches -- and /* */ comments.
var sqlComment = regexp.MustCompile(`(?s)--[^\n]*|/\*.*?\*/`)

// CheckMigration returns an error when a migration of extension name
// creates, alters or drops a table, index, view or trigger whose name does
// not start with extension_<name>_. The host refuses to load an extension
// whose migrations fail this check; extension authors can call it in
// their own tests.
func CheckMigration(name, sql string) error {
	prefix := "extension_" + name + "_"
	for _, m := range schemaObject.FindAllStringSubmatch(sqlComment.ReplaceAllString(sql, " "), -1) {
		kind := strings.ToLower(m[2] + m[3] + m[4])
		obj := strings.Trim(m[5], "\"`[]")
		if i := strings.LastIndex(obj, "."); i >= 0 {
			obj = strings.Trim(obj[i+1:], "\"`[]")
		}
		if !strings.HasPrefix(strings.ToLower(obj), prefix) {
			return fmt.Errorf("%s %q is not named %s*: an extension's tables, indexes, views and triggers must carry its prefix", kind, obj, prefix)
		}
		// An index or trigger is named after the extension but could sit
		// on a core table: check the table it is ON too.
		if kind == "index" || kind == "trigger" {
			if on := onTable.FindStringSubmatch(sql[strings.Index(sql, m[0]):]); on != nil {
				t := strings.Trim(on[1], "\"`[]")
				if !strings.HasPrefix(strings.ToLower(t), prefix) {
					return fmt.Errorf("%s %q is on table %q, which is not the extension's (%s*)", kind, obj, t, prefix)
				}
			}
		}
	}
	return nil
}

var onTable = regexp.MustCompile(`(?is)\bON\s+([^\s(;]+)`)
