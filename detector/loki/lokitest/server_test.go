package lokitest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/gorilla/websocket"
	"github.com/grafana/loki/pkg/push"
)

func do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func pushJSON(t *testing.T, s *Server, tenant, body string) (int, string) {
	req, _ := http.NewRequest("POST", s.URL+"/loki/api/v1/push", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if tenant != "" {
		req.Header.Set("X-Scope-OrgID", tenant)
	}
	return do(t, req)
}

func get(t *testing.T, s *Server, path string, q url.Values) (int, string) {
	req, _ := http.NewRequest("GET", s.URL+path+"?"+q.Encode(), nil)
	req.Header.Set("X-Scope-OrgID", "t1")
	return do(t, req)
}

type rangeResp struct {
	Data struct {
		Result []struct {
			Stream map[string]string `json:"stream"`
			Values [][2]string       `json:"values"`
		} `json:"result"`
	} `json:"data"`
}

func TestPushAnswersLikeLoki(t *testing.T) {
	s := New(Options{MultiTenant: true})
	defer s.Close()
	if code, body := pushJSON(t, s, "", `{"streams":[]}`); code != 401 || body != "no org id\n" {
		t.Errorf("no tenant: %d %q", code, body)
	}
	if code, body := pushJSON(t, s, "t1", `{"streams":[{"stream":{"service":"audit"},"values":[["1","x"]]}]}`); code != 204 || body != "" {
		t.Errorf("json push: %d %q", code, body)
	}
	if code, body := pushJSON(t, s, "t1", `not json`); code != 400 || !strings.HasPrefix(body, "skipThreeBytes: expect ull, error found in #2 byte of ...|not json|...") {
		t.Errorf("bad json: %d %q", code, body)
	}
	req, _ := http.NewRequest("POST", s.URL+"/loki/api/v1/push", strings.NewReader("garbage"))
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Scope-OrgID", "t1")
	if code, body := do(t, req); code != 400 || strings.TrimSpace(body) != "snappy: corrupt input" {
		t.Errorf("bad protobuf: %d %q", code, body)
	}
	pr := push.PushRequest{Streams: []push.Stream{{Labels: `{service="audit"}`, Entries: []push.Entry{{Timestamp: time.Unix(0, 2), Line: "y"}}}}}
	raw, _ := pr.Marshal()
	req, _ = http.NewRequest("POST", s.URL+"/loki/api/v1/push", bytes.NewReader(snappy.Encode(nil, raw)))
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Scope-OrgID", "t1")
	if code, _ := do(t, req); code != 204 {
		t.Errorf("protobuf push: %d", code)
	}
	code, body := get(t, s, "/loki/api/v1/query_range", url.Values{"query": {`{service="audit"}`}, "start": {"0"}, "end": {"10"}, "direction": {"forward"}})
	var r rangeResp
	json.Unmarshal([]byte(body), &r)
	if code != 200 || len(r.Data.Result) != 1 || len(r.Data.Result[0].Values) != 2 {
		t.Errorf("query after pushes: %d %s", code, body)
	}
}

func TestQueryRangeBoundsLimitsAndLabels(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	audit := map[string]string{"service": "audit"}
	for i := 1; i <= 5; i++ {
		s.Push("t1", audit, time.Unix(0, int64(i)), `{"action":"auth_failed","client_ip":"192.0.2.`+strconv.Itoa(i)+`","service":"x"}`)
	}
	s.Push("t1", audit, time.Unix(0, 3), `{"action":"auth_failed","client_ip":"192.0.2.3","service":"x"}`) // exact repeat
	s.Push("t1", audit, time.Unix(0, 6), `plain text`)
	q := func(vals url.Values) (int, string, rangeResp) {
		code, body := get(t, s, "/loki/api/v1/query_range", vals)
		var r rangeResp
		json.Unmarshal([]byte(body), &r)
		return code, body, r
	}
	count := func(r rangeResp) (n int, first string) {
		for _, st := range r.Data.Result {
			for _, v := range st.Values {
				if n == 0 || v[0] < first {
					first = v[0]
				}
				n++
			}
		}
		return
	}
	sel := `{service="audit"}`
	if _, _, r := q(url.Values{"query": {sel}, "start": {"3"}, "end": {"4"}}); func() bool { n, f := count(r); return n != 1 || f != "3" }() {
		t.Errorf("start inclusive, end exclusive, repeat stored once: %+v", r)
	}
	if _, _, r := q(url.Values{"query": {sel}, "start": {"3"}, "end": {"3"}}); len(r.Data.Result) != 0 {
		t.Errorf("start=end returned %+v", r)
	}
	if _, _, r := q(url.Values{"query": {sel + ` | json`}, "start": {"0"}, "end": {"10"}, "limit": {"2"}, "direction": {"forward"}}); func() bool { n, f := count(r); return n != 2 || f != "1" }() {
		t.Errorf("forward limit 2 must return the oldest two: %+v", r)
	}
	_, _, r := q(url.Values{"query": {sel + ` | json | action="auth_failed"`}, "start": {"0"}, "end": {"10"}})
	if len(r.Data.Result) != 5 {
		t.Fatalf("each client_ip is its own stream: got %d streams", len(r.Data.Result))
	}
	l := r.Data.Result[0].Stream
	if l["service_extracted"] != "x" || l["service"] != "audit" || l["service_name"] != "audit" || l["detected_level"] != "unknown" || l["client_ip"] == "" {
		t.Errorf("labels %v", l)
	}
	if code, body, _ := q(url.Values{"query": {sel}, "limit": {"6000"}}); code != 400 || strings.TrimSpace(body) != "max entries limit per query exceeded, limit > max_entries_limit_per_query (6000 > 5000)" {
		t.Errorf("limit 6000: %d %q", code, body)
	}
	if code, body, _ := q(url.Values{"query": {`{service="audit"`}}); code != 400 || !strings.HasPrefix(body, "parse error at line 1, col 17: syntax error: unexpected $end, expecting } or ,") {
		t.Errorf("bad query: %d %q", code, body)
	}
}

func dialTail(t *testing.T, s *Server, q url.Values) (*websocket.Conn, *http.Response, error) {
	u := "ws" + strings.TrimPrefix(s.URL, "http") + "/loki/api/v1/tail?" + q.Encode()
	return websocket.DefaultDialer.Dial(u, nil)
}

func TestTailClosesAndRefusesLikeLoki(t *testing.T) {
	s := New(Options{TailMaxDuration: time.Second, MaxConcurrentTails: 1})
	defer s.Close()
	sel := url.Values{"query": {`{service="audit"}`}}
	if _, resp, err := dialTail(t, s, url.Values{"query": {`{service="audit"}`}, "delay_for": {"6"}}); err == nil || resp.StatusCode != 400 {
		t.Errorf("delay_for 6 accepted")
	}
	c1, _, err := dialTail(t, s, sel)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c2, _, err := dialTail(t, s, sel)
	if err != nil {
		t.Fatalf("the handshake of a tail over the limit must succeed: %v", err)
	}
	_, _, err = c2.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 1011 || !strings.Contains(ce.Text, "max concurrent tail requests limit exceeded, count > limit (2 > 1)") {
		t.Errorf("over-limit tail: %v", err)
	}
	s.Push("fake", map[string]string{"service": "audit"}, time.Now(), "hello")
	_, msg, err := c1.ReadMessage()
	if err != nil || !strings.Contains(string(msg), `"values":[[`) || !strings.Contains(string(msg), `"hello"`) {
		t.Fatalf("frame %s, %v", msg, err)
	}
	_, _, err = c1.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 1011 || ce.Text != "reached tail max duration limit" {
		t.Errorf("max duration close: %v", err)
	}
}

func TestTailHistoryIsTheNewestLimitLines(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	base := time.Now().Add(-time.Minute)
	for i := range 10 {
		s.Push("fake", map[string]string{"service": "audit"}, base.Add(time.Duration(i)), "line "+strconv.Itoa(i))
	}
	c, _, err := dialTail(t, s, url.Values{"query": {`{service="audit"}`}, "start": {strconv.FormatInt(base.UnixNano(), 10)}, "limit": {"3"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, msg, err := c.ReadMessage()
	if err != nil || !strings.Contains(string(msg), "line 7") || strings.Contains(string(msg), "line 6") {
		t.Errorf("history %s, %v", msg, err)
	}
}
