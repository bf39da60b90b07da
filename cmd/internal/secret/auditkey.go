package secret

import (
	"fmt"

	"github.com/authguard/authguard/responder/auditsig"
)

// AuditKeys reads audit signing keys, one a file (several while rotating).
func AuditKeys(files []string) ([]auditsig.Key, error) {
	var keys []auditsig.Key
	for _, f := range files {
		s, err := Read(f, "")
		if err != nil {
			return nil, err
		}
		k, err := auditsig.NewKey([]byte(s))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}
