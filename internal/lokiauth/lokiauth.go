// Package lokiauth is how a client of Loki's HTTP API identifies itself
// (tenant, basic auth or a bearer token, extra headers), shared by the
// daemon's reader and the gateway's pusher without either linking the
// other.
package lokiauth

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// Auth is how a client of Loki (the reader here, the gateway's pusher)
// identifies itself: a tenant, basic auth or a bearer token, and extra
// headers. Files are read again for every request, so a rotated Secret is
// picked up without a restart.
type Auth struct {
	// Tenant is sent as X-Scope-OrgID when set.
	Tenant string
	// Username and PasswordFile are basic auth; Password is used when no
	// file is named.
	Username, Password, PasswordFile string
	// BearerTokenFile holds a bearer token: its first line that is neither
	// blank nor a # comment, so a file that lists several tokens during a
	// rotation sends the first. BearerToken is used when no file is named.
	BearerTokenFile, BearerToken string
	// Headers are added to every request.
	Headers map[string]string
}

// Apply sets the tenant, credentials and extra headers on h.
func (a Auth) Apply(h http.Header) error {
	for k, v := range a.Headers {
		h.Set(k, v)
	}
	if a.Tenant != "" {
		h.Set("X-Scope-OrgID", a.Tenant)
	}
	switch {
	case a.BearerTokenFile != "":
		tok, err := firstLine(a.BearerTokenFile)
		if err != nil {
			return fmt.Errorf("loki bearer token: %w", err)
		}
		h.Set("Authorization", "Bearer "+tok)
	case a.BearerToken != "":
		h.Set("Authorization", "Bearer "+a.BearerToken)
	case a.Username != "":
		pw := a.Password
		if a.PasswordFile != "" {
			b, err := os.ReadFile(a.PasswordFile)
			if err != nil {
				return fmt.Errorf("loki password: %w", err)
			}
			pw = strings.TrimSpace(string(b))
		}
		r := http.Request{Header: h}
		r.SetBasicAuth(a.Username, pw)
	}
	return nil
}

// Check reads the files Apply will read, so a wrong path is reported at
// start rather than at the first request.
func (a Auth) Check() error {
	return a.Apply(http.Header{})
}

func firstLine(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			return line, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s holds no token", path)
}
