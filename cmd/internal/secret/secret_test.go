package secret

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileThenEnvironment(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	os.WriteFile(file, []byte("from-file\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	t.Setenv("AUTHGUARD_TEST_SECRET", " from-env ")
	tests := []struct {
		name, file, want, err string
	}{
		{"a file wins", file, "from-file", ""},
		{"no file: the environment", "", "from-env", ""},
		{"a missing file is an error, not a fallback", filepath.Join(dir, "missing"), "", "read secret"},
		{"an empty file is an error", empty, "", "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Read(tt.file, "AUTHGUARD_TEST_SECRET")
			if got != tt.want || (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("Read = %q, %v; want %q, error %q", got, err, tt.want, tt.err)
			}
		})
	}
}
