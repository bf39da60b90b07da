package lokiflag

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A token file listing two tokens during a rotation sends its first; a
// rewritten file is read at the next request; basic auth reads its
// password file; the tenant and extra headers go with every request.
func TestTheClientIdentifiesItselfFromItsFiles(t *testing.T) {
	dir := t.TempDir()
	token, password := filepath.Join(dir, "token"), filepath.Join(dir, "password")
	os.WriteFile(token, []byte("# rotating\n\nnew-token\nold-token\n"), 0o600)
	os.WriteFile(password, []byte("s3cret\n"), 0o600)

	f := Loki{LokiTenant: "team-a", LokiBearerTokenFile: token, LokiHeaders: map[string]string{"X-Env": "prod"}}
	h := http.Header{}
	if err := f.Auth().Apply(h); err != nil {
		t.Fatal(err)
	}
	if h.Get("Authorization") != "Bearer new-token" || h.Get("X-Scope-OrgID") != "team-a" || h.Get("X-Env") != "prod" {
		t.Errorf("headers %v", h)
	}
	os.WriteFile(token, []byte("newer-token\n"), 0o600)
	h = http.Header{}
	f.Auth().Apply(h)
	if h.Get("Authorization") != "Bearer newer-token" {
		t.Errorf("after the rewrite: %q", h.Get("Authorization"))
	}

	basic := Loki{LokiUsername: "authguard", LokiPasswordFile: password}
	h = http.Header{}
	if err := basic.Auth().Apply(h); err != nil {
		t.Fatal(err)
	}
	r := http.Request{Header: h}
	if u, p, ok := r.BasicAuth(); !ok || u != "authguard" || p != "s3cret" {
		t.Errorf("basic auth %q %q %v", u, p, ok)
	}

	os.WriteFile(token, []byte("# only a comment\n"), 0o600)
	if err := f.Check(); err == nil || !strings.Contains(err.Error(), "holds no token") {
		t.Errorf("a token file without a token: %v", err)
	}
}
