package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway/bus"
)

// TestDeadLettersListAndReplay: a message the router cannot read becomes a dead letter at once;
// an operator lists it and replays it with the CLI, and the replay reaches the router again.
func TestDeadLettersListAndReplay(t *testing.T) {
	dir := t.TempDir()
	listen := freePort(t)
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	serveInBackground(t, listen, func(ctx context.Context) (string, error) {
		return runCLI(t, ctx, nil, "serve", "--dev", "--data-dir", dir, "--listen", listen)
	})

	url, err := os.ReadFile(filepath.Join(dir, "nats.url"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.Open(ctx, bus.Config{URLs: []string{strings.TrimSpace(string(url))}, UseExisting: true}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	dead := make(chan struct{}, 4)
	go b.Follow(ctx, "sb.dead.>", true, func(*bus.Msg) error { dead <- struct{}{}; return nil })
	if err := b.Publish(ctx, bus.SendSubject("demo"), "garbage-1", []byte("not a dispatch")); err != nil {
		t.Fatal(err)
	}
	<-dead

	out, err := runCLI(t, ctx, nil, "deadletters", "list", "--dev", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "sb.send.demo") || !strings.Contains(out, "bad dispatch") {
		t.Fatalf("deadletters list: %v\n%s", err, out)
	}
	seq := regexp.MustCompile(`(?m)^(\d+)\s`).FindStringSubmatch(out)
	if seq == nil {
		t.Fatalf("no sequence number in:\n%s", out)
	}
	if out, err := runCLI(t, ctx, nil, "deadletters", "replay", "--dev", "--data-dir", dir, "nope"); err == nil {
		t.Fatalf("replay of a bad sequence number passed:\n%s", out)
	}
	out, err = runCLI(t, ctx, nil, "deadletters", "replay", "--dev", "--data-dir", dir, seq[1])
	if err != nil || !strings.Contains(out, "replayed "+seq[1]) {
		t.Fatalf("deadletters replay: %v\n%s", err, out)
	}
	<-dead // the replay went through the router again, which dead-lettered it again
	stop()
}
