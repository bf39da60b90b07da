package testtools

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"
)

func TestUnpackWritesAnExecutableWithoutTheSuffix(t *testing.T) {
	dir := t.TempDir()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte("#!/bin/sh\necho hi\n"))
	zw.Close()
	gz := filepath.Join(dir, "tool.gz")
	if err := os.WriteFile(gz, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	path, err := Unpack(gz, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "tool" {
		t.Fatalf("unpacked as %s", path)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "#!/bin/sh\necho hi\n" {
		t.Fatalf("content %q, %v", got, err)
	}
	if fi, _ := os.Stat(path); fi.Mode()&0o100 == 0 {
		t.Fatalf("mode %v is not executable", fi.Mode())
	}
}

func TestUnpackRefusesWhatIsNotGzip(t *testing.T) {
	gz := filepath.Join(t.TempDir(), "tool.gz")
	os.WriteFile(gz, []byte("not gzip"), 0o644)
	if _, err := Unpack(gz, t.TempDir()); err == nil {
		t.Fatal("a file that is not gzip was unpacked")
	}
}

func TestFreePortsAreDistinct(t *testing.T) {
	ports, err := FreePorts(8)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p == 0 || seen[p] {
			t.Fatalf("ports %v", ports)
		}
		seen[p] = true
	}
}

func TestDirSaysWhatItMustHold(t *testing.T) {
	t.Setenv(Env, "")
	_, err := Dir("etcd.gz")
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("etcd.gz")) {
		t.Fatalf("err %v", err)
	}
}
