package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline"
)

// TestLogsFollowAsJSON: `logs -f -o json` writes one JSON status event per line, the tenant's
// only; an unknown -o is refused before anything connects.
func TestLogsFollowAsJSON(t *testing.T) {
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	b, err := bus.Open(ctx, bus.Config{Embedded: &bus.Embedded{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Token: "tok"}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	natsURL := strings.Replace(b.ClientURL(), "nats://", "nats://tok@", 1)

	// Bounded: a follower that took the bad flag would run until cancelled.
	bad, cancelBad := context.WithTimeout(ctx, 10*time.Second)
	out, err := runCLI(t, bad, nil, "logs", "-f", "-o", "yaml", "--nats-url", natsURL)
	cancelBad()
	if gateway.ErrorCode(err) != gateway.EInvalidField {
		t.Fatalf("-o yaml: %v\n%s", err, out)
	}

	at := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	want := []gateway.Status{gateway.StatusSent, gateway.StatusDelivered, gateway.StatusRead}
	for i, st := range want {
		for _, tenant := range []string{"beta", "acme"} {
			if err := pipeline.PublishStatus(ctx, b, gateway.StatusEvent{MessageID: "msg_" + tenant, Tenant: tenant, Channel: gateway.WhatsApp,
				Account: "sales", Status: st, At: at.Add(time.Duration(i) * time.Second)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	pr, pw := io.Pipe()
	followed := make(chan error, 1)
	go func() {
		root := newRoot(&globals{stdout: pw, stderr: io.Discard})
		root.SetArgs([]string{"logs", "-f", "--from-start", "-o", "json", "--nats-url", natsURL, "--tenant", "acme"})
		followed <- root.ExecuteContext(ctx)
		pw.Close()
	}()
	dec := json.NewDecoder(pr)
	for i, st := range want {
		var ev gateway.StatusEvent
		if err := dec.Decode(&ev); err != nil {
			t.Fatal(err)
		}
		if ev.Tenant != "acme" || ev.MessageID != "msg_acme" || ev.Status != st || !ev.At.Equal(at.Add(time.Duration(i)*time.Second)) {
			t.Fatalf("line %d: %+v, want msg_acme %s", i, ev, st)
		}
	}
	go io.Copy(io.Discard, pr) // keep the follower's writes flowing until it sees the cancel
	stop()
	if err := <-followed; err != nil {
		t.Errorf("logs -f: %v", err)
	}
}
