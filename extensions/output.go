package extensions

import (
	"fmt"
	"io"
)

// PrintList prints a list of n items called what ("tags") as the core's
// lists print: data as json or yaml, else table; with no items, table
// writes the header alone and "no tags" goes to stderr, so that a person
// sees the list is empty while a script reading stdout gets the header.
func PrintList(cli CLI, data any, n int, what string, table func(w io.Writer) error) error {
	return cli.Print(data, func(w io.Writer) error {
		if err := table(w); err != nil || n > 0 {
			return err
		}
		_, err := fmt.Fprintf(cli.Stderr(), "no %s\n", what)
		return err
	})
}
