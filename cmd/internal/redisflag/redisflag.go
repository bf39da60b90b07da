// Package redisflag holds the Redis settings both authguard binaries take,
// and turns them into a client: standalone (redis:// or rediss://), through
// Sentinel, or Redis Cluster, with an ACL user, a password from a file and
// TLS with a custom CA.
package redisflag

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/authguard/authguard/cmd/internal/cliconfig"
	"github.com/authguard/authguard/cmd/internal/exitcode"
	"github.com/authguard/authguard/cmd/internal/secret"
	"github.com/authguard/authguard/responder/blockset"
)

// Flags are the Redis settings.
type Flags struct {
	RedisURL            string   `help:"Redis URL (redis:// or rediss://); with Sentinel only its database, user and TLS choice are used." default:"redis://127.0.0.1:6379/0" placeholder:"URL"`
	RedisSentinelAddrs  []string `help:"Sentinel addresses; with --redis-sentinel-master the master is found through them and followed across failovers." placeholder:"HOST:PORT,..."`
	RedisSentinelMaster string   `help:"Name of the master the Sentinels watch." placeholder:"NAME"`
	RedisClusterAddrs   []string `help:"Redis Cluster seed nodes; every key then carries the hash tag of --redis-key-prefix (default {authguard}) so a block's keys share one slot." placeholder:"HOST:PORT,..."`
	RedisUsername       string   `help:"Redis ACL user." placeholder:"USER"`
	RedisPasswordFile   string   `help:"File holding the Redis password (never logged); without it, AUTHGUARD_REDIS_PASSWORD." placeholder:"FILE"`
	RedisTLSCAFile      string   `name:"redis-tls-ca-file" help:"CA bundle to verify Redis's TLS certificate (implies TLS)." placeholder:"FILE"`
	RedisKeyPrefix      string   `help:"Prefix put before every Redis key and channel; with Redis Cluster it must hold a hash tag such as {authguard}." placeholder:"PREFIX"`
}

// ClusterKeyPrefix is the key prefix under Redis Cluster when none is set:
// its hash tag puts every authguard key in one slot, which a block's
// one-round-trip script needs.
const ClusterKeyPrefix = "{authguard}"

// Keys returns the key schema with the configured prefix.
func (f *Flags) Keys() blockset.Keys {
	prefix := f.RedisKeyPrefix
	if prefix == "" && len(f.RedisClusterAddrs) > 0 {
		prefix = ClusterKeyPrefix
	}
	return blockset.DefaultKeys.WithPrefix(prefix)
}

// hasHashTag reports whether Redis Cluster would hash only part of a key
// that starts with prefix: a non-empty {...}.
func hasHashTag(prefix string) bool {
	i := strings.IndexByte(prefix, '{')
	if i < 0 {
		return false
	}
	j := strings.IndexByte(prefix[i+1:], '}')
	return j > 0
}

// RedisAuth says where the Redis password comes from, for --check-config:
// never the password itself.
func (f *Flags) RedisAuth() string {
	switch {
	case f.RedisPasswordFile != "":
		return "password from " + f.RedisPasswordFile
	case strings.TrimSpace(os.Getenv("AUTHGUARD_REDIS_PASSWORD")) != "":
		return "password from AUTHGUARD_REDIS_PASSWORD"
	}
	if u, err := url.Parse(f.RedisURL); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return "password in --redis-url"
		}
	}
	return "no password"
}

// Client builds the client the flags describe.
func (f *Flags) Client() (redis.UniversalClient, error) {
	// redis:6379 parses as a URL with no host, which go-redis would take
	// for 127.0.0.1:6379.
	if u, err := url.Parse(f.RedisURL); err == nil && u.Scheme != "unix" && u.Host == "" {
		// Not shown: what it holds may be a password.
		return nil, exitcode.UsageError(errors.New("--redis-url names no host: want a URL such as redis://redis:6379/0"))
	}
	opt, err := redis.ParseURL(f.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("--redis-url: %w", err)
	}
	if f.RedisUsername != "" {
		opt.Username = f.RedisUsername
	}
	password, err := secret.Read(f.RedisPasswordFile, "AUTHGUARD_REDIS_PASSWORD")
	if err != nil {
		return nil, fmt.Errorf("--redis-password-file: %w", err)
	}
	if password != "" {
		opt.Password = password
	}
	if f.RedisTLSCAFile != "" {
		pem, err := os.ReadFile(f.RedisTLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("--redis-tls-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--redis-tls-ca-file %s: no certificates found", f.RedisTLSCAFile)
		}
		if opt.TLSConfig == nil {
			opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		opt.TLSConfig.RootCAs = pool
	}
	switch {
	case len(f.RedisClusterAddrs) > 0 && len(f.RedisSentinelAddrs) > 0:
		return nil, errors.New("--redis-cluster-addrs and --redis-sentinel-addrs exclude each other")
	case len(f.RedisClusterAddrs) > 0 && f.RedisKeyPrefix != "" && !hasHashTag(f.RedisKeyPrefix):
		return nil, fmt.Errorf("--redis-key-prefix %q has no hash tag: under Redis Cluster a block's keys must share one slot; use e.g. %q", f.RedisKeyPrefix, "{"+strings.TrimSuffix(f.RedisKeyPrefix, ":")+"}")
	case len(f.RedisClusterAddrs) > 0:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: f.RedisClusterAddrs, Username: opt.Username, Password: opt.Password, TLSConfig: opt.TLSConfig,
		}), nil
	case len(f.RedisSentinelAddrs) > 0 && f.RedisSentinelMaster == "":
		return nil, errors.New("--redis-sentinel-addrs needs --redis-sentinel-master")
	case len(f.RedisSentinelAddrs) > 0:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: f.RedisSentinelMaster, SentinelAddrs: f.RedisSentinelAddrs,
			Username: opt.Username, Password: opt.Password, DB: opt.DB, TLSConfig: opt.TLSConfig,
		}), nil
	}
	return redis.NewClient(opt), nil
}

// Redacted describes the target for logs, without secrets.
func (f *Flags) Redacted() string {
	if len(f.RedisClusterAddrs) > 0 {
		return "cluster via " + strings.Join(f.RedisClusterAddrs, ",")
	}
	if len(f.RedisSentinelAddrs) > 0 {
		return fmt.Sprintf("sentinel master %q via %s", f.RedisSentinelMaster, strings.Join(f.RedisSentinelAddrs, ","))
	}
	u, err := url.Parse(f.RedisURL)
	if err != nil {
		return "(a malformed --redis-url)" // its text may hold a password
	}
	return u.Redacted()
}

// Probe is what --check-config=online asks Redis: a PING.
func Probe(rdb redis.UniversalClient) cliconfig.Probe {
	return cliconfig.Probe{Name: "redis", Run: func(ctx context.Context) (string, error) { return "answers PING", rdb.Ping(ctx).Err() }}
}
