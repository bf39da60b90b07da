// Package testtools finds and unpacks the real binaries that make
// test-real runs (loki, etcd, kube-apiserver, kept gzipped in
// $AUTHGUARD_TEST_TOOLS) and picks loopback ports for them.
package testtools

import (
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// Env names the directory holding the gzipped binaries; the project's CI
// sets it to ../shared/tools.
const Env = "AUTHGUARD_TEST_TOOLS"

// Dir is $AUTHGUARD_TEST_TOOLS, or an error that says what it must hold.
func Dir(holds ...string) (string, error) {
	dir := os.Getenv(Env)
	if dir == "" {
		return "", fmt.Errorf("%s is not set: make test-real points it at ../shared/tools, which holds %s", Env, strings.Join(holds, ", "))
	}
	return dir, nil
}

// Unpack decompresses the file gz into dir as an executable named after
// it without ".gz", and returns its path.
func Unpack(gz, dir string) (string, error) {
	in, err := os.Open(gz)
	if err != nil {
		return "", err
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		return "", fmt.Errorf("%s: %w", gz, err)
	}
	path := filepath.Join(dir, strings.TrimSuffix(filepath.Base(gz), ".gz"))
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, zr); err != nil {
		out.Close()
		return "", fmt.Errorf("%s: %w", gz, err)
	}
	return path, out.Close()
}

// FreePorts returns n distinct loopback ports that were free a moment
// ago: all are held open together, so none is returned twice.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
