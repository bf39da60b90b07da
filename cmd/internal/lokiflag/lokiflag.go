// Package lokiflag holds the flags both binaries use to reach Loki (the
// daemon reads it, the gateway pushes to it or to the daemon's push
// receiver): tenant, credentials, extra headers and TLS, with the same
// names and meaning in both.
package lokiflag

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/authguard/authguard/cmd/internal/secret"
	"github.com/authguard/authguard/cmd/internal/serve"
)

// Loki is embedded in a command's flags.
type Loki struct {
	LokiTenant          string            `help:"Tenant sent to Loki as X-Scope-OrgID." placeholder:"ID"`
	LokiUsername        string            `help:"Basic-auth user for Loki (password from --loki-password-file, else AUTHGUARD_LOKI_PASSWORD)." placeholder:"USER"`
	LokiPasswordFile    string            `help:"File holding the basic-auth password; read again for every request." placeholder:"FILE"`
	LokiBearerTokenFile string            `help:"File holding the bearer token sent to Loki (its first line, so a file listing two tokens during a rotation sends the first); read again for every request. Without it, AUTHGUARD_LOKI_BEARER_TOKEN." placeholder:"FILE"`
	LokiHeaders         map[string]string `help:"Extra request headers." placeholder:"NAME=VALUE;..."`
	LokiTLSCAFile       string            `name:"loki-tls-ca-file" help:"CA bundle to verify Loki's certificate." placeholder:"FILE"`
	LokiTLSCertFile     string            `name:"loki-tls-cert-file" help:"Client certificate for Loki (mTLS)." placeholder:"FILE"`
	LokiTLSKeyFile      string            `name:"loki-tls-key-file" help:"Key of --loki-tls-cert-file." placeholder:"FILE"`
	LokiTLSServerName   string            `name:"loki-tls-server-name" help:"Name Loki's certificate must carry, when it is not the URL's host." placeholder:"NAME"`
}

// Auth returns the tenant, credentials and headers to send. Without a
// file the password and token may come from the environment, read once.
func (f *Loki) Auth() Auth {
	a := Auth{Tenant: f.LokiTenant, Username: f.LokiUsername, PasswordFile: f.LokiPasswordFile,
		BearerTokenFile: f.LokiBearerTokenFile, Headers: f.LokiHeaders}
	if a.PasswordFile == "" {
		a.Password, _ = secret.Read("", "AUTHGUARD_LOKI_PASSWORD")
	}
	if a.BearerTokenFile == "" {
		a.BearerToken, _ = secret.Read("", "AUTHGUARD_LOKI_BEARER_TOKEN")
	}
	return a
}

// Check reads every file the flags name, so a wrong path or an empty
// token file is reported at start.
func (f *Loki) Check() error {
	if err := f.Auth().Check(); err != nil {
		return err
	}
	_, err := f.TLS()
	return err
}

// TLS returns the client TLS settings, nil when none is asked for (the
// system roots then verify an https Loki).
func (f *Loki) TLS() (*tls.Config, error) {
	if f.LokiTLSCAFile == "" && f.LokiTLSCertFile == "" && f.LokiTLSKeyFile == "" && f.LokiTLSServerName == "" {
		return nil, nil
	}
	if (f.LokiTLSCertFile == "") != (f.LokiTLSKeyFile == "") {
		return nil, errors.New("--loki-tls-cert-file and --loki-tls-key-file go together")
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.LokiTLSServerName}
	if f.LokiTLSCAFile != "" {
		pem, err := os.ReadFile(f.LokiTLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("--loki-tls-ca-file: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--loki-tls-ca-file %s: no certificates found", f.LokiTLSCAFile)
		}
	}
	if f.LokiTLSCertFile != "" {
		// Read again when renewed on disk (as cert-manager writes it).
		kp, err := serve.NewKeyPair("--loki-tls", f.LokiTLSCertFile, f.LokiTLSKeyFile)
		if err != nil {
			return nil, err
		}
		conf.GetClientCertificate = kp.Client
	}
	return conf, nil
}

// Auth is how a client of Loki (the daemon's reader, the gateway's pusher)
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
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if lines := secret.Lines(b); len(lines) > 0 {
		return lines[0], nil
	}
	return "", fmt.Errorf("%s holds no token", path)
}
