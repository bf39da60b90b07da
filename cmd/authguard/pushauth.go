package main

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/authguard/authguard/cmd/internal/secret"
)

// pushAuth decides which pushes the receiver takes. A push is taken when
// it carries one of the bearer tokens, one of the basic-auth users with
// its password, or came over a connection whose client certificate the
// client CA verified; and, with a tenant set, when it names that tenant.
// With no way set a push is taken only when unauthenticated pushes are
// allowed.
type pushAuth struct {
	tokens *secretLines // "TOKEN" lines
	users  *secretLines // "USER:PASSWORD" lines
	mtls   bool         // the listener verifies client certificates
	open   bool         // --push-allow-unauthenticated
	tenant string
}

func (c *runCmd) pushAuth() (*pushAuth, error) {
	a := &pushAuth{mtls: c.PushTLSClientCAFile != "", open: c.PushAllowUnauthenticated, tenant: c.PushTenant}
	var err error
	if c.PushBearerTokenFile != "" {
		if a.tokens, err = newSecretLines("--push-bearer-token-file", c.PushBearerTokenFile, checkToken); err != nil {
			return nil, err
		}
	}
	if c.PushBasicAuthFile != "" {
		if a.users, err = newSecretLines("--push-basic-auth-file", c.PushBasicAuthFile, checkUser); err != nil {
			return nil, err
		}
	}
	if c.PushListen != "" && !a.authenticates() && !a.open {
		return nil, errors.New("--push-listen takes pushes only from clients it can authenticate: set --push-bearer-token-file, --push-basic-auth-file or --push-tls-client-ca-file (or, where nothing else can reach it, --push-allow-unauthenticated)")
	}
	return a, nil
}

func (a *pushAuth) authenticates() bool { return a.tokens != nil || a.users != nil || a.mtls }

func (a *pushAuth) authorize(r *http.Request) bool {
	if a.tenant != "" && r.Header.Get("X-Scope-OrgID") != a.tenant {
		return false
	}
	if !a.authenticates() {
		return a.open
	}
	if a.mtls && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return true
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && a.tokens != nil {
		return a.tokens.contains([]byte(tok))
	}
	if user, pw, ok := r.BasicAuth(); ok && a.users != nil {
		return a.users.contains([]byte(user + ":" + pw))
	}
	return false
}

// secretLines is a file of secrets one a line (several during a rotation;
// blank lines and # comments are ignored), read again when it changes,
// looked at at most once a second, so a rotated Secret is picked up
// without a restart.
type secretLines struct {
	flag, path string
	check      func(string) error

	mu      sync.Mutex
	checked time.Time
	mod     time.Time
	size    int64
	lines   [][]byte
}

func newSecretLines(flag, path string, check func(string) error) (*secretLines, error) {
	s := &secretLines{flag: flag, path: path, check: check}
	if err := s.load(time.Now()); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *secretLines) load(now time.Time) error {
	st, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("%s: %w", s.flag, err)
	}
	s.checked = now
	if st.ModTime().Equal(s.mod) && st.Size() == s.size && s.lines != nil {
		return nil
	}
	b, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("%s: %w", s.flag, err)
	}
	var lines [][]byte
	for _, line := range secret.Lines(b) {
		if err := s.check(line); err != nil {
			// The line number, never the secret.
			return fmt.Errorf("%s %s:%d: %w", s.flag, s.path, lineOf(b, line), err)
		}
		lines = append(lines, []byte(line))
	}
	if len(lines) == 0 {
		return fmt.Errorf("%s %s holds no entry", s.flag, s.path)
	}
	s.lines, s.mod, s.size = lines, st.ModTime(), st.Size()
	return nil
}

// contains compares given with every line in constant time.
func (s *secretLines) contains(given []byte) bool {
	if len(given) == 0 {
		return false
	}
	s.mu.Lock()
	if now := time.Now(); now.Sub(s.checked) >= time.Second {
		s.load(now) // on error the lines read before stay
	}
	lines := s.lines
	s.mu.Unlock()
	match := 0
	for _, l := range lines {
		match |= subtle.ConstantTimeCompare(given, l)
	}
	return match == 1
}

// lineOf is the number of the first line of b that holds entry.
func lineOf(b []byte, entry string) int {
	for n, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == entry {
			return n + 1
		}
	}
	return 0
}

func checkToken(line string) error {
	if strings.ContainsAny(line, " \t") {
		return errors.New("a token holds no space")
	}
	return nil
}

func checkUser(line string) error {
	if user, pw, ok := strings.Cut(line, ":"); !ok || user == "" || pw == "" {
		return errors.New(`want "USER:PASSWORD"`)
	}
	return nil
}
