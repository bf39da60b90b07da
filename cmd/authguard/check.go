package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/alecthomas/kong"
	"github.com/redis/go-redis/v9"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authguard/authguard/cmd/internal/cliconfig"
	"github.com/authguard/authguard/cmd/internal/redisflag"
	"github.com/authguard/authguard/detector/loki"
	"github.com/authguard/authguard/responder/slack"
)

// check is --check-config: the settings, rules and secrets are read and
// checked, and what they amount to is printed, with where each setting
// came from; online, each backend is reached as well.
func (c *runCmd) check(ctx context.Context, e *env, kctx *kong.Context) error {
	st, err := c.settings()
	if err != nil {
		return err
	}
	rdb, err := c.Client()
	if err != nil {
		return err
	}
	defer rdb.Close()
	sec, err := c.slackSecrets()
	if err != nil {
		return err
	}
	if _, err := c.notifier(sec, io.Discard, slog.New(slog.DiscardHandler), nil, nil, nil); err != nil {
		return err
	}
	for flag, addr := range map[string]string{"--listen": c.Listen, "--push-listen": c.PushListen, "--slack-listen": c.SlackListen} {
		if addr == "" && flag != "--listen" {
			continue
		}
		if _, err := net.ResolveTCPAddr("tcp", addr); err != nil {
			return fmt.Errorf("%s %q: %w", flag, addr, err)
		}
	}
	fmt.Fprintf(e.stdout, "configuration OK: %d rules, redis %s (%s), loki %s\n", len(st.set.Config.Rules), c.Redacted(), c.RedisAuth(), orNone(c.LokiURL))
	fmt.Fprintf(e.stdout, "slack: %s\n", sec.describe(c.SlackListen))
	printBudget(e.stdout, st.set.Config)
	cliconfig.PrintOrigins(e.stdout, e.sources.Origins(kctx))
	if !c.CheckConfig.Online() {
		return nil
	}
	return c.reach(ctx, e.stdout, st, rdb, sec)
}

// reach is --check-config=online: each backend the settings name is asked
// something it answers only when reachable and the credentials are right.
func (c *runCmd) reach(ctx context.Context, w io.Writer, st *settings, rdb redis.UniversalClient, sec slackSecrets) error {
	probes := []cliconfig.Probe{redisflag.Probe(rdb)}
	if c.LokiURL != "" {
		probes = append(probes, cliconfig.Probe{Name: "loki", Run: func(ctx context.Context) (string, error) { return c.probeLoki(ctx, st) }})
	}
	switch sec.mode {
	case "bot":
		probes = append(probes, cliconfig.Probe{Name: "slack", Run: func(ctx context.Context) (string, error) {
			who, err := slack.Whoami(ctx, sec.secret, c.SlackAPIURL)
			return "the token is " + who, err
		}})
	case "webhook":
		probes = append(probes, cliconfig.Probe{Name: "slack", Run: func(context.Context) (string, error) {
			return "not reached: a webhook can only be checked by posting to it", nil
		}})
	}
	if c.LeaderElect {
		probes = append(probes, cliconfig.Probe{Name: "kubernetes", Run: c.probeLease})
	}
	return cliconfig.Reach(ctx, w, probes)
}

// probeLoki runs the query over the last hour.
func (c *runCmd) probeLoki(ctx context.Context, st *settings) (string, error) {
	tail, err := lokiReader(c.LokiURL, c.LokiQuery, &c.Loki, st.lokiTLS, loki.NewParser(loki.DefaultFields, c.MaxLineBytes, c.MaxLineHardBytes, false))
	if err != nil {
		return "", err
	}
	now := time.Now()
	newest, err := tail.Probe(ctx, now)
	switch {
	case err != nil:
		return "", err
	case newest.IsZero():
		return "the query runs; no line matched it in the last hour (is anything writing audit lines?)", nil
	}
	return fmt.Sprintf("the query runs; its newest line is %s old", now.Sub(newest).Round(time.Second)), nil
}

// probeLease reads the leader election's Lease (not there yet is fine:
// the first replica creates it).
func (c *runCmd) probeLease(ctx context.Context) (string, error) {
	el, err := c.election(slog.New(slog.DiscardHandler))
	if err != nil {
		return "", err
	}
	lease, err := el.client.CoordinationV1().Leases(el.cfg.Namespace).Get(ctx, el.cfg.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Sprintf("lease %s/%s not there yet (the first replica creates it)", el.cfg.Namespace, el.cfg.Name), nil
	case err != nil:
		return "", err
	case lease.Spec.HolderIdentity == nil:
		return fmt.Sprintf("lease %s/%s has no holder", el.cfg.Namespace, el.cfg.Name), nil
	}
	return fmt.Sprintf("lease %s/%s held by %s", el.cfg.Namespace, el.cfg.Name, *lease.Spec.HolderIdentity), nil
}
