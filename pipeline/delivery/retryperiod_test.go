package delivery_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
)

// outcomes records the dispatcher's attempt metrics.
type outcomes struct {
	mu   sync.Mutex
	got  []string    // "endpoint:outcome"
	seen chan string // when set, sees each one too (never blocking the dispatcher)
}

func (o *outcomes) WebhookAttempt(_, endpoint, outcome string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, endpoint+":"+outcome)
	select {
	case o.seen <- endpoint + ":" + outcome:
	default:
	}
}

func (o *outcomes) count(s string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, g := range o.got {
		if g == s {
			n++
		}
	}
	return n
}

// TestRetriesForThreeDays: with the default retry period, an endpoint that keeps failing gets
// the event retried (fake clock) until it is 72 hours old and not after; then the dispatcher gives
// up on it and the next event of the endpoint goes out.
func TestRetriesForThreeDays(t *testing.T) {
	b := openBus(t)
	clock := &fakeClock{now: time.Now()}
	start := clock.Now()
	var mu sync.Mutex
	var attempts []time.Time
	following := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte("msg_next")) {
			following <- struct{}{}
			return
		}
		mu.Lock()
		attempts = append(attempts, clock.Now())
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	key, _ := delivery.ParseSecret(delivery.NewSecret())
	m := &outcomes{}
	runDispatcher(t, delivery.Config{Bus: b, Sealer: noSealer{}, Clock: clock, Jitter: func() float64 { return 0 }, Metrics: m,
		Endpoints: []delivery.Endpoint{{ID: "crm", Tenant: "acme", URL: srv.URL, Secrets: []delivery.Secret{key}, AllowPrivate: true}},
		Log:       zerolog.Nop()})
	publish(t, b, "msg_failing", gateway.StatusSent, start)
	publish(t, b, "msg_next", gateway.StatusSent, start)
	select {
	case <-following:
	case <-time.After(60 * time.Second):
		t.Fatal("the dispatcher never gave up on the failing event")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) < 2 {
		t.Fatalf("%d attempts", len(attempts))
	}
	last, before := attempts[len(attempts)-1].Sub(start), attempts[len(attempts)-2].Sub(start)
	if before >= delivery.DefaultMaxAge || last < delivery.DefaultMaxAge {
		t.Fatalf("the last two attempts were %s and %s after the event, want either side of %s", before, last, delivery.DefaultMaxAge)
	}
	if delivery.DefaultMaxAge != 72*time.Hour {
		t.Fatalf("default retry period %s, want 3 days", delivery.DefaultMaxAge)
	}
	if n := m.count("crm:gave_up"); n != 1 {
		t.Errorf("gave_up counted %d times", n)
	}
	if n := m.count("crm:failed"); n != len(attempts)-1 {
		t.Errorf("failed counted %d times for %d attempts", n, len(attempts))
	}
}
