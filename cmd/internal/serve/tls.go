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
	kp := &keyPair{flag: flag, certFile: certFile, keyFile: keyFile}
	if err := kp.load(time.Now()); err != nil {
		return nil, err
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get}
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

// keyPair is a certificate and its key as files, re-read when they change.
type keyPair struct {
	flag, certFile, keyFile string

	mu      sync.Mutex
	checked time.Time
	stamp   [2]time.Time // modification times of the two files
	cert    *tls.Certificate
}

func (kp *keyPair) load(now time.Time) error {
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

// get serves the current pair; when the files cannot be read (half
// written during a renewal), the pair read before is kept.
func (kp *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if now := time.Now(); now.Sub(kp.checked) >= time.Second {
		kp.load(now)
	}
	return kp.cert, nil
}
