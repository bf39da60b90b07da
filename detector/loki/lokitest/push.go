package lokitest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
)

type pushedStream struct {
	labels  map[string]string
	entries []entry
}

// decodePush reads a push body as Loki does: JSON when the content type
// says so, else snappy-compressed protobuf. It is the fake's own decoder,
// written apart from authguard's receiver so that one bug cannot hide in
// both.
func decodePush(contentType string, body []byte) ([]pushedStream, error) {
	if strings.HasPrefix(contentType, "application/json") {
		return decodeJSON(body)
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		return nil, errors.New("snappy: corrupt input")
	}
	var req push.PushRequest
	if err := req.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("proto: %v", err)
	}
	var out []pushedStream
	for _, st := range req.Streams {
		labels, err := parseLabelSet(st.Labels)
		if err != nil {
			return nil, err
		}
		ps := pushedStream{labels: labels}
		for _, e := range st.Entries {
			ps.entries = append(ps.entries, entry{e.Timestamp.UnixNano(), e.Line})
		}
		out = append(out, ps)
	}
	return out, nil
}

func decodeJSON(body []byte) ([]pushedStream, error) {
	var req struct {
		Streams []struct {
			Stream map[string]string `json:"stream"`
			Values [][]string        `json:"values"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, jsonPushError(body)
	}
	var out []pushedStream
	for _, st := range req.Streams {
		ps := pushedStream{labels: st.Stream}
		for _, v := range st.Values {
			if len(v) < 2 {
				return nil, errors.New("loghttp.PushRequest: a value is not [ts, line]")
			}
			ts, err := strconv.ParseInt(v[0], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("loghttp.PushRequest: bad timestamp %q", v[0])
			}
			ps.entries = append(ps.entries, entry{ts, v[1]})
		}
		out = append(out, ps)
	}
	return out, nil
}

// jsonPushError words a malformed JSON body's refusal as Loki's jsoniter
// does for the commonest shapes (LOKI-FACTS.md: the text quotes the input).
func jsonPushError(body []byte) error {
	ctx := string(body[:min(len(body), 10)])
	at := func(i int) string {
		if i < len(body) {
			return string(body[i : i+1])
		}
		return "EOF"
	}
	i := 0
	for i < len(body) && strings.IndexByte(" \t\r\n", body[i]) >= 0 {
		i++
	}
	switch {
	case i < len(body) && body[i] == '{':
		j := i + 1
		for j < len(body) && strings.IndexByte(" \t\r\n", body[j]) >= 0 {
			j++
		}
		//lint:ignore ST1005 Loki's own words, as a real Loki answers
		return fmt.Errorf("loghttp.PushRequest.readFieldHash: expect \", but found %s, error found in #%d byte of ...|%s|..., bigger context ...|%s|...", at(j), j+1, ctx, ctx)
	case i < len(body) && body[i] == 'n':
		//lint:ignore ST1005 Loki's own words, as a real Loki answers
		return fmt.Errorf("skipThreeBytes: expect ull, error found in #%d byte of ...|%s|..., bigger context ...|%s|...", i+2, ctx, ctx)
	}
	//lint:ignore ST1005 Loki's own words, as a real Loki answers
	return fmt.Errorf("loghttp.PushRequest.ReadObjectCB: expect { or n, but found %s, error found in #%d byte of ...|%s|..., bigger context ...|%s|...", at(i), i+1, ctx, ctx)
}

// parseLabelSet reads {a="1", b="2"}, with strconv.QuotedPrefix for the
// values.
func parseLabelSet(s string) (map[string]string, error) {
	bad := fmt.Errorf("1:2: parse error: unexpected label set %q", s)
	body, opened := strings.CutPrefix(strings.TrimSpace(s), "{")
	body, closed := strings.CutSuffix(body, "}")
	if !opened || !closed {
		return nil, bad
	}
	out := map[string]string{}
	for rest := strings.TrimSpace(body); rest != ""; {
		name, after, found := strings.Cut(rest, "=")
		if !found || strings.TrimSpace(name) == "" {
			return nil, bad
		}
		after = strings.TrimSpace(after)
		quoted, err := strconv.QuotedPrefix(after)
		if err != nil {
			return nil, bad
		}
		value, _ := strconv.Unquote(quoted)
		out[strings.TrimSpace(name)] = value
		rest = strings.TrimSpace(after[len(quoted):])
		if rest, found = strings.CutPrefix(rest, ","); !found && rest != "" {
			return nil, bad
		}
		rest = strings.TrimSpace(rest)
	}
	return out, nil
}
