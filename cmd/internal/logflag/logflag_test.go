package logflag

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// A duration in a log line reads as people write it, in either format.
func TestDurationsAreWrittenAsText(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		log, err := Log{LogLevel: "info", LogFormat: format}.Logger(&b)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("retrying", "retry_in", 1500*time.Millisecond)
		if format == "json" {
			var line map[string]any
			if err := json.Unmarshal(b.Bytes(), &line); err != nil || line["retry_in"] != "1.5s" {
				t.Errorf("json: %s (%v)", b.String(), err)
			}
		} else if !bytes.Contains(b.Bytes(), []byte("retry_in=1.5s")) {
			t.Errorf("text: %s", b.String())
		}
	}
}

// auto writes JSON where no person reads (a pipe, a file, a pod's log).
func TestAutoIsJSONWhenNotATerminal(t *testing.T) {
	var b bytes.Buffer
	log, err := Log{LogLevel: "info", LogFormat: "auto"}.Logger(&b)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hello")
	if !json.Valid(b.Bytes()) {
		t.Errorf("auto into a buffer wrote %q, want JSON", b.String())
	}
}
