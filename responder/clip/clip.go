// Package clip bounds attacker-controlled text before it is stored, logged
// or shown: a username, a path, a log line. One rule everywhere: at most n
// bytes, never half a UTF-8 sequence.
package clip

import "strings"

// String returns s cut to at most n bytes, dropping a UTF-8 sequence the
// cut would split (and any invalid bytes before it).
func String(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// Marked is String with "…" added when something was cut, for text a
// reader should know is incomplete.
func Marked(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return String(s, n) + "…"
}
