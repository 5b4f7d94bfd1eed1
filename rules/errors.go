package rules

import (
	"fmt"
	"strings"
)

// Error is one problem in a rules file, with the position an admin needs to
// fix it. The message is written for the person editing the file, not for the
// programmer: it names the field and says what would be accepted.
type Error struct {
	File   string
	Line   int // 1-based; 0 when the problem has no single position
	Column int // 1-based; 0 when unknown
	Msg    string
}

func (e *Error) Error() string {
	switch {
	case e.Line > 0 && e.Column > 0:
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	default:
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
}

// ErrorList is every problem found in one load, in file order, so that an
// admin can fix them all in one edit instead of one per reload. It is capped
// at maxErrors entries.
type ErrorList []*Error

const maxErrors = 25

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find the individual *Error values.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}
