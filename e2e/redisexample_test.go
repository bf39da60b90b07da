package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// deploy/components/redis, run as its pod would run it (its command
// line, its redis.conf, the password from the Secret or none), on a real
// redis-server: it asks for the password when there is one, refuses to
// evict, and a block written to it survives a SIGKILL and a restart.
func TestRedisExampleKeepsBlocksAcrossACrash(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed: run `make test`, which installs it, or apt-get install -y redis-server")
	}
	manifests, err := os.ReadFile("../deploy/components/redis/redis.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var sts appsv1.StatefulSet
	if err := yaml.UnmarshalStrict([]byte(strings.Split(string(manifests), "\n---\n")[0]), &sts); err != nil {
		t.Fatal(err)
	}
	c := sts.Spec.Template.Spec.Containers[0]
	var dataMount, confMount string
	for _, m := range c.VolumeMounts {
		switch m.Name {
		case "data":
			dataMount = m.MountPath
		case "config":
			confMount = m.MountPath
		}
	}
	conf, err := os.ReadFile("../deploy/components/redis/redis.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, password := range []string{"", "0f8e5c2b9a7d4e1f"} {
		name := "with the Secret's password"
		if password == "" {
			name = "without a password"
		}
		t.Run(name, func(t *testing.T) {
			root, addr := t.TempDir(), freeAddr(t)
			_, port, _ := strings.Cut(addr, ":")
			// The pod's paths moved under root, and loopback for its
			// listener: nothing else of the file changes.
			local := strings.NewReplacer("port 6379", "port "+port, "bind * -::*", "bind 127.0.0.1", "dir "+dataMount, "dir "+filepath.Join(root, dataMount)).Replace(string(conf))
			for _, d := range []string{dataMount, confMount} {
				os.MkdirAll(filepath.Join(root, d), 0o755)
			}
			os.WriteFile(filepath.Join(root, confMount, "redis.conf"), []byte(local), 0o644)
			args := append(c.Command[1:], strings.ReplaceAll(c.Args[0], confMount+"/", filepath.Join(root, confMount)+"/"))
			env := []string{"PATH=" + os.Getenv("PATH")}
			for _, e := range c.Env {
				if e.Name == "REDIS_PASSWORD" && password != "" {
					env = append(env, "REDIS_PASSWORD="+password)
				}
			}
			var out bytes.Buffer
			run := func() *exec.Cmd {
				cmd := exec.Command(c.Command[0], args...)
				cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, &out
				cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // sh and redis-server, killed together
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				return cmd
			}
			crash := func(cmd *exec.Cmd) { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() }
			ctx := context.Background()
			client := redis.NewClient(&redis.Options{Addr: addr, Password: password})
			defer client.Close()
			cmd := run()
			defer func() { crash(cmd) }()
			eventually(t, 10*time.Second, "the example's redis-server to answer", func() bool { return client.Ping(ctx).Err() == nil })

			anonymous := redis.NewClient(&redis.Options{Addr: addr})
			defer anonymous.Close()
			if err := anonymous.Ping(ctx).Err(); (password != "") != (err != nil && strings.Contains(err.Error(), "NOAUTH")) {
				t.Errorf("a client without the password: %v", err)
			}
			for key, want := range map[string]string{"maxmemory-policy": "noeviction", "appendonly": "yes", "appendfsync": "everysec"} {
				if got := client.ConfigGet(ctx, key).Val()[key]; got != want {
					t.Errorf("%s is %q, want %q", key, got, want)
				}
			}

			// A block as the runbook writes it, in the append-only file
			// on the volume before the crash.
			const key = "ip_block:198.51.100.7"
			if err := client.Set(ctx, key, "1", 300*time.Second).Err(); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "the block to reach the append-only file", func() bool {
				found := false
				filepath.WalkDir(filepath.Join(root, dataMount), func(p string, d os.DirEntry, err error) error {
					if err == nil && !d.IsDir() {
						b, _ := os.ReadFile(p)
						found = found || bytes.Contains(b, []byte(key))
					}
					return nil
				})
				return found
			})
			crash(cmd)
			cmd = run()
			eventually(t, 10*time.Second, "the restarted redis-server to answer", func() bool { return client.Ping(ctx).Err() == nil })
			ttl, err := client.TTL(ctx, key).Result()
			if v, gerr := client.Get(ctx, key).Result(); gerr != nil || v != "1" || err != nil || ttl <= 0 || ttl > 300*time.Second {
				if errors.Is(gerr, redis.Nil) {
					t.Fatalf("the block was lost in the crash\n%s", out.String())
				}
				t.Errorf("after the crash %s = %q (%v), TTL %v (%v)", key, v, gerr, ttl, err)
			}
		})
	}
}
