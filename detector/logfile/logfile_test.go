package logfile

import (
	"strings"
	"testing"

	"github.com/authguard/authguard/detector/loki"
)

func TestReadBothFormatsIntoTimeOrder(t *testing.T) {
	in := strings.Join([]string{
		`{"labels":{"service":"audit"},"line":"{\"action\":\"auth_failed\",\"client_ip\":\"192.0.2.2\"}","timestamp":"2026-11-22T10:00:02Z"}`,
		`{"ts":"2026-11-22T10:00:01Z","action":"auth_failed","client_ip":"192.0.2.1"}`,
		``,
		`not json`,
		`{"ts":"yesterday","action":"auth_failed","client_ip":"192.0.2.3"}`,
		`{"labels":{},"line":"{\"action\":\"auth_failed\"}","timestamp":"2026-11-22T10:00:03Z"}`,
	}, "\n")
	evs, st, err := Read(strings.NewReader(in), JSON(loki.NewParser(loki.DefaultFields, 0, 0, true), loki.NewParser(loki.DefaultFields, 0, 0, false)), 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].IP.String() != "192.0.2.1" || evs[1].IP.String() != "192.0.2.2" {
		t.Fatalf("events %+v", evs)
	}
	if st.Lines != 5 || st.Skipped["not_json"] != 1 || st.Skipped["bad_time"] != 1 || st.Skipped["no_client_ip"] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestExactRepeatsAreOneEvent(t *testing.T) {
	line := `{"ts":"2026-11-22T10:00:01Z","action":"auth_failed","client_ip":"192.0.2.1"}`
	other := `{"ts":"2026-11-22T10:00:01Z","action":"auth_failed","client_ip":"192.0.2.2"}`
	evs, st, err := Read(strings.NewReader(line+"\n"+other+"\n"+line+"\n"), JSON(loki.NewParser(loki.DefaultFields, 0, 0, true), loki.NewParser(loki.DefaultFields, 0, 0, false)), 1<<16)
	if err != nil || len(evs) != 2 || st.Duplicates != 1 {
		t.Fatalf("events %d duplicates %d err %v", len(evs), st.Duplicates, err)
	}
}
