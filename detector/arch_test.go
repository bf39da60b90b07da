package detector

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryPackageHasAComment walks the module and asks each package for a
// package comment.
func TestEveryPackageHasAComment(t *testing.T) {
	root := ".."
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" {
			return filepath.SkipDir
		}
		files, _ := filepath.Glob(filepath.Join(path, "*.go"))
		documented := map[string]bool{} // package name -> has a comment
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				return err
			}
			documented[f.Name.Name] = documented[f.Name.Name] || f.Doc != nil
		}
		for pkg, ok := range documented {
			if !ok {
				t.Errorf("package %s in %s has no package comment", pkg, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDetectorStaysPure keeps I/O, backends and the wall clock out of the
// engine.
func TestDetectorStaysPure(t *testing.T) {
	bannedPaths := map[string]bool{"net": true, "net/http": true, "os": true, "os/exec": true, "log/slog": true}
	bannedPrefixes := []string{"github.com/redis/", "github.com/slack-go/", "github.com/gorilla/", "github.com/authguard/authguard/responder"}
	files, _ := filepath.Glob("*.go")
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path := strings.Trim(imp.Path.Value, `"`)
			if bannedPaths[path] {
				t.Errorf("%s imports %s", name, path)
			}
			for _, b := range bannedPrefixes {
				if strings.HasPrefix(path, b) {
					t.Errorf("%s imports %s", name, path)
				}
			}
		}
		src, _ := os.ReadFile(name)
		for _, call := range []string{"time.Now(", "time.Sleep(", "time.Tick(", "time.After("} {
			if strings.Contains(string(src), call) {
				t.Errorf("%s calls %s: time must come from events", name, call)
			}
		}
	}
}
