package tftp

import (
	"errors"
	"path"
	"path/filepath"
	"strings"
)

// Why a requested name is refused; never sent to the client as is.
var (
	errEmptyName    = errors.New("empty file name")
	errAbsoluteName = errors.New("absolute file name")
	errDotDot       = errors.New("file name has a .. element")
	errNameChar     = errors.New("file name has a control character or a backslash")
)

// cleanName turns a requested file name into a slash-separated path
// relative to the assets directory. Absolute names and any ".." element
// are refused outright, even where cleaning would keep the path inside,
// so what is logged is what was asked for. Backslashes are refused rather
// than translated: the binaries served here are never asked for that way.
// os.Root is the real guard (it also refuses symlinks that leave the
// directory); this only keeps obviously hostile names from reaching it.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", errEmptyName
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return "", errNameChar
		}
	}
	if strings.HasPrefix(name, "/") {
		return "", errAbsoluteName
	}
	for el := range strings.SplitSeq(name, "/") {
		if el == ".." {
			return "", errDotDot
		}
	}
	clean := path.Clean(name)
	if clean == "." || !filepath.IsLocal(clean) {
		return "", errEmptyName
	}
	return clean, nil
}
