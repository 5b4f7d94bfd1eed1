package proxy

import (
	"io"
	"log/slog"
)

// NewServerLogForTest exposes the net/http error log adapter to tests.
func NewServerLogForTest(l *slog.Logger) io.Writer { return &serverLog{log: l} }
