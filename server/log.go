package server

import (
	"io"
	"log/slog"
)

// NewLogger builds the structured logger the settings ask for. Nothing in
// Gatecast logs a token secret: admission logs only hashes' absence or
// presence, and the admin API logs IDs.
func NewLogger(cfg Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by Config.Validate
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
