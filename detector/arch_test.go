package detector

import (
	"go/ast"
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
	root, packages := "..", 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
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
		packages += len(documented)
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
	if packages < 20 {
		t.Fatalf("found %d packages; the walk missed the module", packages)
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

// TestFilesAndFunctionsStayShort keeps the code in rooms a reader can take
// in: no production file over 500 lines (tests and the fakes aside), no
// function over 80.
func TestFilesAndFunctionsStayShort(t *testing.T) {
	files := 0
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != ".." && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		fake := strings.Contains(filepath.ToSlash(path), "/lokitest/")
		if n := strings.Count(string(src), "\n"); n > 500 && !fake {
			t.Errorf("%s has %d lines; split it by concept (at most 500)", path, n)
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			var body *ast.BlockStmt
			switch fn := n.(type) {
			case *ast.FuncDecl:
				body = fn.Body
			case *ast.FuncLit:
				body = fn.Body
			}
			if body != nil {
				if lines := fset.Position(body.End()).Line - fset.Position(body.Pos()).Line + 1; lines > 80 {
					t.Errorf("%s: a function of %d lines (at most 80)", fset.Position(body.Pos()), lines)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("read %d Go files; the walk missed the module", files)
	}
}
