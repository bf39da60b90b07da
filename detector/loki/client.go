package loki

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder/clip"
)

func (t *Tail) endpoint(path string, q url.Values, ws bool) (string, error) {
	u, err := url.Parse(t.cfg.URL)
	if err != nil {
		return "", fmt.Errorf("loki url %q: %w", t.cfg.URL, err)
	}
	switch {
	case u.Scheme == "http" && ws:
		u.Scheme = "ws"
	case u.Scheme == "https" && ws:
		u.Scheme = "wss"
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("loki url %q: want http or https", t.cfg.URL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// header builds the request headers: tenant, auth, extras.
func (t *Tail) header() (http.Header, error) {
	h := http.Header{}
	if t.cfg.Header == nil {
		return h, nil
	}
	if err := t.cfg.Header(h); err != nil {
		return nil, err
	}
	return h, nil
}

// maxRefusalBytes bounds the part of a refusal's body put in an error.
const maxRefusalBytes = 300

// refusal turns Loki's refusal of a request into an error that says what to
// change.
func (t *Tail) refusal(what string, status int, body string) error {
	// Bounded: a proxy or a wrong URL answers with a whole HTML page,
	// which would otherwise fill every log line of the retries.
	body = clip.Marked(strings.Join(strings.Fields(body), " "), maxRefusalBytes)
	switch {
	case status == http.StatusUnauthorized && strings.Contains(body, "no org id"):
		return fmt.Errorf("loki %s refused the %s: 401 %s: this Loki is multi-tenant; set --loki-tenant", t.cfg.URL, what, body)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return fmt.Errorf("loki %s refused the %s: %d %s: check the Loki credentials", t.cfg.URL, what, status, body)
	case status == http.StatusBadRequest:
		return fmt.Errorf("loki %s refused the %s: 400 %s: check --loki-query and --loki-delay-for", t.cfg.URL, what, body)
	}
	return fmt.Errorf("loki %s: %s: %d %s", t.cfg.URL, what, status, body)
}

// queryRange asks Loki's query_range with the headers h and returns the
// answer's body; what names the query in errors.
func (t *Tail) queryRange(ctx context.Context, h http.Header, q url.Values, what string) ([]byte, error) {
	target, err := t.endpoint("/loki/api/v1/query_range", q, false)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header = h.Clone()
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s to %s: %w", what, t.cfg.URL, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("%s to %s: %w", what, t.cfg.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, t.refusal(what, resp.StatusCode, string(body))
	}
	return body, nil
}

// maxSeriesMinutes bounds AttemptsPerMinute's series.
const maxSeriesMinutes = 60

// AttemptsPerMinute counts the source's events (the query's lines) from
// key, an address, or from all clients for "", minute by minute: bucket i
// holds those in the minute ending at the i-th minute boundary at or after
// from, the last bucket the one holding to; at most the last hour. Loki
// answers it as sum(count_over_time(QUERY | action="auth_failed" |
// client_ip="KEY" [1m])) with a
// one-minute step. Keys that are prefixes are not counted.
func (t *Tail) AttemptsPerMinute(ctx context.Context, key string, from, to time.Time) ([]int, error) {
	// Failed logins only: the query may read successes too (takeovers).
	query := t.query.Full
	if !t.query.parses() {
		query += " | json"
	}
	query += " | " + t.stage.parser.fields.Action + `="` + detector.ActionAuthFailed + `"`
	if key != "" {
		addr, err := netip.ParseAddr(key)
		if err != nil {
			return nil, fmt.Errorf("attempts per minute: %q is not a single address", key)
		}
		query += " | " + t.stage.parser.fields.ClientIP + `="` + addr.String() + `"`
	}
	ceil := func(x time.Time) time.Time {
		if m := x.Truncate(time.Minute); !m.Equal(x) {
			return m.Add(time.Minute)
		}
		return x
	}
	first, last := ceil(from), ceil(to)
	if last.Sub(first) >= maxSeriesMinutes*time.Minute {
		first = last.Add(-(maxSeriesMinutes - 1) * time.Minute)
	}
	h, err := t.header()
	if err != nil {
		return nil, err
	}
	q := url.Values{"query": {"sum(count_over_time(" + query + " [1m]))"}, "start": {strconv.FormatInt(first.UnixNano(), 10)},
		"end": {strconv.FormatInt(last.UnixNano(), 10)}, "step": {"60"}}
	body, err := t.queryRange(ctx, h, q, "attempts-per-minute query")
	if err != nil {
		return nil, err
	}
	var answer struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Values [][2]json.RawMessage `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || answer.Status != "success" {
		return nil, fmt.Errorf("attempts per minute from %s: undecodable answer (status %q): %v", t.cfg.URL, answer.Status, err)
	}
	series := make([]int, int(last.Sub(first)/time.Minute)+1)
	for _, r := range answer.Data.Result {
		for _, v := range r.Values {
			var at float64
			var n string
			if json.Unmarshal(v[0], &at) != nil || json.Unmarshal(v[1], &n) != nil {
				continue
			}
			i := int(math.Round((at - float64(first.Unix())) / 60))
			count, err := strconv.Atoi(n)
			if err == nil && i >= 0 && i < len(series) {
				series[i] += count
			}
		}
	}
	return series, nil
}

// Probe asks Loki for the newest entry of the query in the last hour, as a
// check that Loki answers, takes the credentials and tenant, and parses
// the query. It returns that entry's time (zero when the hour had none).
func (t *Tail) Probe(ctx context.Context, now time.Time) (time.Time, error) {
	h, err := t.header()
	if err != nil {
		return time.Time{}, err
	}
	q := url.Values{"query": {t.query.Remote}, "start": {strconv.FormatInt(now.Add(-time.Hour).UnixNano(), 10)},
		"end": {strconv.FormatInt(now.UnixNano(), 10)}, "limit": {"1"}, "direction": {"backward"}}
	body, err := t.queryRange(ctx, h, q, "check query")
	if err != nil {
		return time.Time{}, err
	}
	status, result, err := decodeQueryResult(body)
	if err != nil || status != "success" {
		return time.Time{}, fmt.Errorf("loki %s: undecodable answer to the check query (status %q): %v", t.cfg.URL, status, err)
	}
	var newest int64
	for _, s := range result {
		for _, v := range s.Values {
			if ts, err := strconv.ParseInt(v[0], 10, 64); err == nil && ts > newest {
				newest = ts
			}
		}
	}
	if newest == 0 {
		return time.Time{}, nil
	}
	return time.Unix(0, newest), nil
}
