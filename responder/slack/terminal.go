package slack

import (
	"context"
	"errors"
	"io"
	"sync"
)

// terminal writes pages as text, so that a demo or a dry run shows what
// Slack would get: every page a new one, never updated.
type terminal struct {
	mu sync.Mutex
	w  io.Writer
}

// Terminal returns the transport that writes pages to w.
func Terminal(w io.Writer) Transport { return &terminal{w: w} }

func (*terminal) Updates() bool { return false }

func (t *terminal) Post(_ context.Context, _ string, m Message, _ string) (string, string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, err := io.WriteString(t.w, m.Terminal())
	return "", "", err
}

func (*terminal) Update(context.Context, string, string, Message) error {
	return errors.New("a terminal cannot update a message")
}
