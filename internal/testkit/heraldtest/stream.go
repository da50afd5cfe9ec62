package heraldtest

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// StreamLines opens an SSE stream and sends its lines; the channel closes
// when the stream ends. stop ends it and waits for its reader.
func StreamLines(ctx context.Context, t testing.TB, url, lastID string) (lines <-chan string, stop func()) {
	t.Helper()
	return StreamLinesVia(ctx, t, http.DefaultClient, url, lastID)
}

// StreamLinesVia is StreamLines over client.
func StreamLinesVia(ctx context.Context, t testing.TB, client *http.Client, url, lastID string) (<-chan string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("stream %s: %v %v", url, resp, err)
	}
	out := make(chan string, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case out <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, func() { cancel(); <-done }
}

// NextLine returns the next line with the prefix, skipping others.
func NextLine(t testing.TB, lines <-chan string, prefix string) string {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the stream ended before a %q line", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("no %q line", prefix)
		}
	}
}
