package redisblock

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/clip"
)

// record is one evidence record: what was done, to whom, why, by whom.
// Stored as one JSON field; the names are the report's vocabulary.
type record struct {
	Time       string `json:"time"`
	Action     string `json:"action"`
	IP         string `json:"ip"`
	Rule       string `json:"rule,omitempty"`
	Trigger    string `json:"trigger,omitempty"`
	Severity   string `json:"severity,omitempty"`
	Count      int    `json:"count,omitempty"`
	Rate       string `json:"rate_per_minute,omitempty"`
	FirstSeen  string `json:"first_seen,omitempty"`
	LastSeen   string `json:"last_seen,omitempty"`
	TTLSeconds int64  `json:"ttl_seconds,omitempty"`
	Offence    int    `json:"offence,omitempty"`
	ExpiresAt  string `json:"expires_at,omitempty"`
	Operator   string `json:"operator,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Sample     string `json:"sample,omitempty"`
}

// json renders the record as a JSON object; by hand, as it is written for
// every block on the hot path. Field names and omissions follow the struct
// tags, which readers use.
func (r *record) json() string {
	b := make([]byte, 0, 384+len(r.Sample))
	b = append(b, '{')
	str := func(name, v string, always bool) {
		if v == "" && !always {
			return
		}
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b = appendJSONString(b, v)
	}
	num := func(name string, v int64) {
		if v == 0 {
			return
		}
		b = append(b, ',', '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b = strconv.AppendInt(b, v, 10)
	}
	str("time", r.Time, true)
	str("action", r.Action, true)
	str("ip", r.IP, true)
	str("rule", r.Rule, false)
	str("trigger", r.Trigger, false)
	str("severity", r.Severity, false)
	num("count", int64(r.Count))
	str("rate_per_minute", r.Rate, false)
	str("first_seen", r.FirstSeen, false)
	str("last_seen", r.LastSeen, false)
	num("ttl_seconds", r.TTLSeconds)
	num("offence", int64(r.Offence))
	str("expires_at", r.ExpiresAt, false)
	str("operator", r.Operator, false)
	str("reason", r.Reason, false)
	str("sample", r.Sample, false)
	b = append(b, '}')
	return string(b)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, each invalid UTF-8 byte replaced by U+FFFD (as
// encoding/json does).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
		case c < utf8.RuneSelf:
			b = append(b, c)
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, "\ufffd"...)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		i++
	}
	return append(b, '"')
}

// why is the metadata's one-line reason: the operator's or the rule's trigger.
func (r *record) why() string {
	if r.Reason != "" {
		return r.Reason
	}
	return r.Trigger
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func decisionRecord(req responder.Request, now, expires time.Time) record {
	d := req.Decision
	r := record{Time: stamp(now), Action: req.Act.String(), IP: d.Key, Rule: d.Rule, Trigger: d.Trigger(), Severity: d.Severity,
		Count: d.Count, Rate: strconv.FormatFloat(d.RatePerMinute, 'f', 1, 64), FirstSeen: stamp(d.FirstSeen), LastSeen: stamp(d.LastSeen),
		Sample: clip.String(d.Sample, 1024)}
	if d.Kind == detector.KindBlock {
		r.TTLSeconds, r.Offence = int64(d.TTL/time.Second), d.Offence
		if !expires.IsZero() {
			r.ExpiresAt = stamp(expires)
		}
	}
	return r
}

// Record is one evidence record.
type Record struct {
	ID     string
	Fields map[string]string
}

// Incident returns the evidence records of one incident, oldest first.
func (s *Store) Incident(ctx context.Context, id string) ([]Record, error) {
	msgs, err := s.rdb.XRange(ctx, s.keys.Evidence, id, "+").Result()
	if err != nil {
		return nil, fmt.Errorf("read evidence: %w", err)
	}
	var out []Record
	for _, m := range msgs {
		fields := map[string]string{}
		if raw, ok := m.Values["record"].(string); ok {
			var rec map[string]any
			json.Unmarshal([]byte(raw), &rec)
			for k, v := range rec {
				fields[k] = fmt.Sprint(v)
			}
		}
		fields["incident"] = fmt.Sprint(m.Values["incident"])
		if m.ID == id || fields["incident"] == id {
			out = append(out, Record{ID: m.ID, Fields: fields})
		}
	}
	return out, nil
}
