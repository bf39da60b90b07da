package serve

import (
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/authguard/authguard/e2e/testcert"
)

// A certificate renewed on disk (cert-manager rewrites the Secret's files)
// is served without a restart; a half-written renewal keeps the old one.
func TestARenewedCertificateIsServedWithoutARestart(t *testing.T) {
	reloadCheck = 0 // every handshake looks at the files
	defer func() { reloadCheck = time.Second }()
	ca := testcert.New(t, "serve")
	certFile, keyFile := ca.Issue(t, "first")
	conf, err := TLS("--push-tls", certFile, keyFile, ca.File)
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		c, err := conf.GetCertificate(nil)
		if err != nil || c == nil {
			t.Fatalf("no certificate: %v", err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.Subject.CommonName
	}
	if got := served(); got != "first" {
		t.Fatalf("serves %q", got)
	}
	// Half written: the key file is garbage for a moment.
	os.WriteFile(keyFile, []byte("-----BEGIN"), 0o600)
	later := time.Now().Add(time.Minute)
	os.Chtimes(keyFile, later, later)
	if got := served(); got != "first" {
		t.Fatalf("during a half-written renewal serves %q", got)
	}
	// The renewal lands.
	newCert, newKey := ca.Issue(t, "second")
	for _, f := range [][2]string{{newCert, certFile}, {newKey, keyFile}} {
		b, _ := os.ReadFile(f[0])
		os.WriteFile(f[1], b, 0o600)
		even := later.Add(time.Minute)
		os.Chtimes(f[1], even, even)
	}
	if got := served(); got != "second" {
		t.Fatalf("after the renewal serves %q", got)
	}
	if conf.ClientCAs == nil {
		t.Error("the client CA is not asked for")
	}
}

func TestTLSFlagsGoTogether(t *testing.T) {
	if _, err := TLS("--push-tls", "cert.pem", "", ""); err == nil || !strings.Contains(err.Error(), "--push-tls-cert-file and --push-tls-key-file go together") {
		t.Errorf("a certificate without a key: %v", err)
	}
	if conf, err := TLS("--push-tls", "", "", ""); conf != nil || err != nil {
		t.Errorf("no TLS asked for: %v %v", conf, err)
	}
}
