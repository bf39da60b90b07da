package main

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// pushTokens are the bearer tokens the push receiver takes, read from a
// file of one token a line (several during a rotation; blank lines and #
// comments are ignored). The file is read again when it changes, looked at
// at most once a second, so a rotated Secret is picked up without a
// restart.
type pushTokens struct {
	path string

	mu      sync.Mutex
	checked time.Time
	mod     time.Time
	size    int64
	tokens  [][]byte
}

func newPushTokens(path string) (*pushTokens, error) {
	t := &pushTokens{path: path}
	if err := t.load(time.Now()); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *pushTokens) load(now time.Time) error {
	st, err := os.Stat(t.path)
	if err != nil {
		return fmt.Errorf("--push-bearer-token-file: %w", err)
	}
	t.checked = now
	if st.ModTime().Equal(t.mod) && st.Size() == t.size && t.tokens != nil {
		return nil
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("--push-bearer-token-file: %w", err)
	}
	var tokens [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			tokens = append(tokens, []byte(line))
		}
	}
	if len(tokens) == 0 {
		return fmt.Errorf("--push-bearer-token-file %s holds no token", t.path)
	}
	t.tokens, t.mod, t.size = tokens, st.ModTime(), st.Size()
	return nil
}

// authorize accepts a request whose Authorization header is "Bearer " and
// one of the tokens, compared in constant time.
func (t *pushTokens) authorize(r *http.Request) bool {
	given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || given == "" {
		return false
	}
	t.mu.Lock()
	if now := time.Now(); now.Sub(t.checked) >= time.Second {
		t.load(now) // on error the tokens read before stay
	}
	tokens := t.tokens
	t.mu.Unlock()
	match := 0
	for _, tok := range tokens {
		match |= subtle.ConstantTimeCompare([]byte(given), tok)
	}
	return match == 1
}
