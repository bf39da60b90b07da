package redisflag

import (
	"strings"
	"testing"
)

func TestClusterKeysCarryAHashTag(t *testing.T) {
	tests := []struct {
		name    string
		flags   Flags
		block   string // the ip_block prefix the keys get
		refused string // part of the error, if the settings are refused
	}{
		{"standalone keeps the runbook's names", Flags{RedisURL: "redis://127.0.0.1:6379"}, "ip_block:", ""},
		{"cluster without a prefix gets the {authguard} tag", Flags{RedisURL: "redis://127.0.0.1:6379", RedisClusterAddrs: []string{"127.0.0.1:7000"}}, "{authguard}ip_block:", ""},
		{"cluster with a tagged prefix keeps it", Flags{RedisURL: "redis://127.0.0.1:6379", RedisClusterAddrs: []string{"127.0.0.1:7000"}, RedisKeyPrefix: "{prod}"}, "{prod}ip_block:", ""},
		{"cluster with an untagged prefix is refused", Flags{RedisURL: "redis://127.0.0.1:6379", RedisClusterAddrs: []string{"127.0.0.1:7000"}, RedisKeyPrefix: "prod:"}, "", `use e.g. "{prod}"`},
		{"cluster with an empty tag is refused", Flags{RedisURL: "redis://127.0.0.1:6379", RedisClusterAddrs: []string{"127.0.0.1:7000"}, RedisKeyPrefix: "{}x"}, "", "no hash tag"},
		{"cluster and sentinel together are refused", Flags{RedisURL: "redis://127.0.0.1:6379", RedisClusterAddrs: []string{"a:1"}, RedisSentinelAddrs: []string{"b:2"}, RedisSentinelMaster: "m"}, "", "exclude each other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.flags.Client()
			if tt.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("err = %v, want it to say %q", err, tt.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			if got := tt.flags.Keys().Block; got != tt.block {
				t.Errorf("ip_block prefix = %q, want %q", got, tt.block)
			}
		})
	}
}

// Logs and --check-config name the Redis target, never its password.
func TestRedactedHidesThePassword(t *testing.T) {
	for _, u := range []string{"redis://:hunter2@redis:6379/0", "rediss://authguard:hunter2@redis:6380/1"} {
		f := Flags{RedisURL: u}
		if got := f.Redacted(); strings.Contains(got, "hunter2") || !strings.Contains(got, "redis:63") {
			t.Errorf("Redacted(%s) = %q", u, got)
		}
	}
}

// --check-config says where the password comes from, and never prints it.
func TestRedisAuthNamesTheSourceNotThePassword(t *testing.T) {
	tests := []struct {
		name  string
		flags Flags
		env   string
		want  string
	}{
		{"none", Flags{RedisURL: "redis://r:6379/0"}, "", "no password"},
		{"a file", Flags{RedisURL: "redis://r:6379/0", RedisPasswordFile: "/run/pw"}, "hunter2", "password from /run/pw"},
		{"the environment", Flags{RedisURL: "redis://r:6379/0"}, "hunter2", "password from AUTHGUARD_REDIS_PASSWORD"},
		{"blank environment is none", Flags{RedisURL: "redis://r:6379/0"}, "  ", "no password"},
		{"the URL", Flags{RedisURL: "redis://:hunter2@r:6379/0"}, "", "password in --redis-url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("AUTHGUARD_REDIS_PASSWORD", tt.env)
			got := tt.flags.RedisAuth()
			if got != tt.want || strings.Contains(got, "hunter2") {
				t.Errorf("RedisAuth() = %q, want %q", got, tt.want)
			}
		})
	}
}
