package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"

	"github.com/redis/go-redis/v9"

	"github.com/authguard/authguard/cmd/internal/cliconfig"
	"github.com/authguard/authguard/cmd/internal/redisflag"
)

// check is --check-config: what the settings amount to and where each came
// from; online, Redis is asked for a PING and the upstream and the push
// URL for a connection.
func (c *cli) check(ctx context.Context, w io.Writer, rdb redis.UniversalClient) error {
	fmt.Fprintf(w, "configuration OK: %s mode, redis %s (%s)\n", c.Mode, c.Redacted(), c.RedisAuth())
	if c.kctx != nil {
		cliconfig.PrintOrigins(w, c.sources.Origins(c.kctx))
	}
	if !c.CheckConfig.Online() {
		return nil
	}
	probes := []cliconfig.Probe{redisflag.Probe(rdb)}
	if c.Upstream != "" {
		probes = append(probes, cliconfig.Probe{Name: "upstream", Run: func(ctx context.Context) (string, error) { return connects(ctx, c.Upstream) }})
	}
	if c.LokiPushURL != "" {
		probes = append(probes, cliconfig.Probe{Name: "loki-push", Run: func(ctx context.Context) (string, error) { return connects(ctx, c.LokiPushURL) }})
	}
	return cliconfig.Reach(ctx, w, probes)
}

// connects opens a TCP connection to the URL's host and closes it: what
// the service answers is its own business, the gateway's is reaching it.
func connects(ctx context.Context, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443"}[u.Scheme]
		if port == "" {
			port = "80"
		}
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	conn.Close()
	return "accepts connections on " + addr, nil
}
