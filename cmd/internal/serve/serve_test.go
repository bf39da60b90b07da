package serve

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// An upload that keeps moving may take longer than the progress timeout;
// one that stops is cut off.
func TestProgressBodyCutsOffStalledBodiesOnly(t *testing.T) {
	got := make(chan error, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ProgressBody(w, r, 300*time.Millisecond)
		_, err := io.Copy(io.Discard, r.Body)
		got <- err
	})
	ln, err := Limits{}.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := Limits{}.Server(h, true, slog.New(slog.DiscardHandler))
	go srv.Serve(ln)
	defer srv.Close()
	send := func(chunks int, gap time.Duration) error {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
		for i := range chunks {
			io.WriteString(c, strings.Repeat("x", 10/chunks))
			if i < chunks-1 {
				time.Sleep(gap) // the upload's own pace
			}
		}
		select {
		case err := <-got:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("the handler never finished reading")
			return nil
		}
	}
	if err := send(5, 150*time.Millisecond); err != nil {
		t.Errorf("an upload sending every 150 ms for 600 ms was cut off: %v", err)
	}
	if err := send(2, 600*time.Millisecond); err == nil {
		t.Error("a body that stalled 600 ms was read to its end")
	}
}
