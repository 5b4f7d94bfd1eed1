//go:build unix

package mitm

import (
	"io/fs"
	"syscall"
)

// fileGroup is the group that owns a file.
func fileGroup(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Gid), true
}
