//go:build real

package e2e

import (
	"os"
	"path/filepath"

	"github.com/authguard/authguard/detector/loki/lokitest"
)

func init() {
	startRealLoki = func(dir string) (func(), error) {
		d := filepath.Join(dir, "loki")
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		r, err := lokitest.StartReal(d)
		if err != nil {
			return nil, err
		}
		os.Setenv("LOKI_URL", r.URL)
		os.Setenv("LOKI_TENANT", r.Tenant)
		return r.Stop, nil
	}
}
