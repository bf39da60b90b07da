package serve

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"
)

// TLS returns the settings of a listener that serves certFile and keyFile,
// read again when either file changes (looked at at most once a second),
// so a certificate renewed on disk (cert-manager, a rotated Secret) is
// served without a restart. With clientCAFile every client must present a
// certificate signed by one of its CAs (mutual TLS), or the handshake
// fails; the CAs are read once. flag names the setting in errors.
func TLS(flag, certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%s-cert-file and %s-key-file go together", flag, flag)
	}
	if certFile == "" {
		if clientCAFile != "" {
			return nil, fmt.Errorf("%s-client-ca-file needs %s-cert-file and %s-key-file", flag, flag, flag)
		}
		return nil, nil
	}
	kp, err := NewKeyPair(flag, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.Server}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("%s-client-ca-file: %w", flag, err)
		}
		conf.ClientCAs = x509.NewCertPool()
		if !conf.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s-client-ca-file %s: no certificates found", flag, clientCAFile)
		}
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

// reloadCheck is how often a KeyPair looks whether its files changed.
var reloadCheck = time.Second

// KeyPair is a certificate and its key as files, re-read when they change
// (looked at at most every reloadCheck), for a server or a client.
type KeyPair struct {
	flag, certFile, keyFile string

	mu      sync.Mutex
	checked time.Time
	stamp   [2]time.Time // modification times of the two files
	cert    *tls.Certificate
}

// NewKeyPair reads the pair; flag names it in errors ("--push-tls" for
// --push-tls-cert-file).
func NewKeyPair(flag, certFile, keyFile string) (*KeyPair, error) {
	kp := &KeyPair{flag: flag, certFile: certFile, keyFile: keyFile}
	if err := kp.load(time.Now()); err != nil {
		return nil, err
	}
	return kp, nil
}

func (kp *KeyPair) load(now time.Time) error {
	kp.checked = now
	var stamp [2]time.Time
	for i, name := range []string{kp.certFile, kp.keyFile} {
		st, err := os.Stat(name)
		if err != nil {
			return fmt.Errorf("%s-cert-file: %w", kp.flag, err)
		}
		stamp[i] = st.ModTime()
	}
	if kp.cert != nil && stamp == kp.stamp {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		return fmt.Errorf("%s-cert-file: %w", kp.flag, err)
	}
	kp.cert, kp.stamp = &cert, stamp
	return nil
}

// current is the pair now; when the files cannot be read (half written
// during a renewal), the pair read before is kept.
func (kp *KeyPair) current() *tls.Certificate {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if now := time.Now(); now.Sub(kp.checked) >= reloadCheck {
		kp.load(now)
	}
	return kp.cert
}

// Server is tls.Config.GetCertificate.
func (kp *KeyPair) Server(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.current(), nil }

// Client is tls.Config.GetClientCertificate.
func (kp *KeyPair) Client(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return kp.current(), nil
}
