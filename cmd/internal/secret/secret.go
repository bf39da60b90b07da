// Package secret reads the secrets authguard needs (tokens, passwords, a
// webhook URL) from a file or, when no file is named, from an environment
// variable, so that none has to stand on a command line where ps shows it.
// Callers never log what it returns.
package secret

import (
	"fmt"
	"os"
	"strings"
)

// Read returns the secret in file, or else the value of the environment
// variable env ("" when neither is set). A named file that cannot be read
// or is empty is an error.
func Read(file, env string) (string, error) {
	if file == "" {
		return strings.TrimSpace(os.Getenv(env)), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("read secret: file %s is empty", file)
	}
	return s, nil
}

// Lines are the entries of a secrets file of one a line (several during a
// rotation): trimmed, without blank lines and # comments.
func Lines(b []byte) []string {
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}
