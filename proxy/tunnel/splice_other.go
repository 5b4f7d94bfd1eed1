//go:build !linux

package tunnel

import (
	"errors"
	"io"
)

var errNotTCP = errors.New("splice is Linux-only")

// spliceCopy is Linux-only; elsewhere copyStream falls back to io.Copy.
func spliceCopy(io.ReadWriter, io.ReadWriter, int64) (int64, error) { return 0, errNotTCP }
