package loki

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/authguard/authguard/responder/clip"
)

// TestFrameDecoderAgreesWithEncodingJSON: the hand-written decoder reads
// tricky frames exactly as encoding/json does.
func TestFrameDecoderAgreesWithEncodingJSON(t *testing.T) {
	for _, msg := range []string{
		`{"streams":[{"stream":{"service":"audit"},"values":[["1","plain"],["2","{\"a\":\"b\\\\c\"}"]]}]}`,
		`{"streams":[{"stream":{"k":"\u00e9\ud83d\ude00"},"values":[["3","tab\there \/ slash \u0041"]]}],"dropped_entries":[{"labels":{"a":"b"},"timestamp":"9"}]}`,
		` { "streams" : [ ] , "extra" : {"x":[1,2.5e3,true,false,null,"s"]} } `,
		`{"streams":null}`,
		`{"streams":[{"values":[["4","no labels"]],"stream":{}}]}`,
		`{}`,
	} {
		want := frame{}
		if err := json.Unmarshal([]byte(msg), &want); err != nil {
			t.Fatalf("fixture %s: %v", msg, err)
		}
		got, err := decodeFrame([]byte(msg))
		if err != nil {
			t.Errorf("%s: %v", msg, err)
			continue
		}
		if !reflect.DeepEqual(normal(got), normal(want)) {
			t.Errorf("%s:\n got %+v\nwant %+v", msg, got, want)
		}
	}
}

func TestFrameDecoderRefusesBrokenFrames(t *testing.T) {
	for _, msg := range []string{`{"streams":[`, `{"streams":[{"values":[["1"]]}]}`, `{"streams":[{"values":[["1","x]]}]}`, `[]`, `{"streams":[]} trailing`, "{\"streams\":[{\"values\":[[\"1\",\"a\x01b\"]]}]}"} {
		if _, err := decodeFrame([]byte(msg)); err == nil {
			t.Errorf("accepted %q", msg)
		}
	}
}

// normal makes empty and nil slices and maps compare equal.
func normal(f frame) frame {
	if len(f.Streams) == 0 {
		f.Streams = nil
	}
	for i := range f.Streams {
		if len(f.Streams[i].Stream) == 0 {
			f.Streams[i].Stream = nil
		}
		if len(f.Streams[i].Values) == 0 {
			f.Streams[i].Values = nil
		}
	}
	if len(f.DroppedEntries) == 0 {
		f.DroppedEntries = nil
	}
	return f
}

// FuzzDecodeFrame: no input panics, and whatever both decoders accept they
// read alike.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(`{"streams":[{"stream":{"a":"b"},"values":[["1","x\"y"]]}]}`)
	f.Add(`{"streams":[{"values":[["1","\ud800"]]}],"dropped_entries":[{"timestamp":"5"}]}`)
	f.Fuzz(func(t *testing.T, msg string) {
		got, err := decodeFrame([]byte(msg))
		var want frame
		if json.Unmarshal([]byte(msg), &want) != nil || err != nil || caseFoldedKey(msg) {
			return
		}
		if !reflect.DeepEqual(normal(got), normal(want)) {
			t.Fatalf("%q:\n got %+v\nwant %+v", msg, got, want)
		}
	})
}

// FuzzParse: the line parser never panics and never returns an event
// without a valid client address.
func FuzzParse(f *testing.F) {
	f.Add(`{"action":"auth_failed","client_ip":"203.0.113.7","username":"a"}`)
	f.Add(`{"action":"auth_failed","client_ip":"::ffff:1.2.3.4"}`)
	f.Add(`not json`)
	p := NewParser(DefaultFields, 4096, 0, true)
	f.Fuzz(func(t *testing.T, line string) {
		ev, err := p.Parse(time.Time{}, line)
		if err == nil && (!ev.IP.IsValid() || ev.IP.Is4In6() || len(ev.Username) > maxUsernameBytes) {
			t.Fatalf("%q gave %+v", line, ev)
		}
		// Where encoding/json reads the line as an object, the fields
		// agree with it.
		var obj map[string]any
		if json.Unmarshal([]byte(line), &obj) != nil || obj == nil || err != nil {
			return
		}
		if ip, _ := obj["client_ip"].(string); func() bool {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				return false // a spelling netip refuses (padded octets, a port): ParseClientAddr's tests
			}
			a = a.Unmap()
			if b := a.As16(); a.Is6() && [12]byte(b[:12]) == [12]byte{} && !(b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] <= 1) {
				a = netip.AddrFrom4([4]byte(b[12:])) // IPv4-compatible
			}
			return a != ev.IP
		}() {
			t.Fatalf("%q: client_ip %q, parsed %v", line, ip, ev.IP)
		}
		// The same line behind a long field (an 8 KB user agent, escaped)
		// reads the same.
		padded := `{"pad":"` + strings.Repeat(`\"`, 10<<10) + `",` + strings.TrimLeft(line, " \t\r\n")[1:]
		if pev, perr := p.Parse(time.Time{}, padded); perr != nil || pev.IP != ev.IP || pev.Action != ev.Action || pev.Username != ev.Username {
			t.Fatalf("%q behind a long field: %+v, %v; alone %+v", line, pev, perr, ev)
		}
		if a, _ := obj["action"].(string); clip.String(a, 64) != ev.Action {
			t.Fatalf("%q: action %q, parsed %q", line, a, ev.Action)
		}
	})
}

// caseFoldedKey reports whether msg spells a frame key in another case:
// encoding/json matches keys case-insensitively, Loki and decodeFrame do not.
func caseFoldedKey(msg string) bool {
	lower := strings.ToLower(msg)
	for _, k := range []string{`"streams"`, `"stream"`, `"values"`, `"dropped_entries"`, `"timestamp"`} {
		if strings.Count(lower, k) != strings.Count(msg, k) {
			return true
		}
	}
	return false
}
