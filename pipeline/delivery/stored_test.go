package delivery_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
	"github.com/switchboard-gateway/switchboard/store"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
	"github.com/switchboard-gateway/switchboard/store/sql/sqltest"
)

func openStore(t *testing.T) *storesql.DB {
	t.Helper()
	db, _ := sqltest.Open(t, t.TempDir())
	return db
}

// disableWatch is the real store, telling the test when an endpoint is disabled.
type disableWatch struct {
	*storesql.DB
	disabled chan string
}

// attemptWatch is the real store, telling the test when an attempt is recorded.
type attemptWatch struct {
	*storesql.DB
	recorded chan store.WebhookAttempt
}

func (w attemptWatch) RecordWebhookAttempt(ctx context.Context, a store.WebhookAttempt) error {
	err := w.DB.RecordWebhookAttempt(ctx, a)
	select {
	case w.recorded <- a:
	default: // the test reads only the first ones
	}
	return err
}

func (w disableWatch) SetWebhookDisabled(ctx context.Context, tenant, id string, at time.Time, reason string) error {
	err := w.DB.SetWebhookDisabled(ctx, tenant, id, at, reason)
	w.disabled <- id + ":" + reason
	return err
}

type hit struct {
	id     string
	header http.Header
	body   []byte
}

// receiver is a webhook receiver that answers 200 and hands over every request.
func receiver(t *testing.T) (*httptest.Server, <-chan hit) {
	hits := make(chan hit, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hits <- hit{id: r.Header.Get("webhook-id"), header: r.Header.Clone(), body: body}
	}))
	t.Cleanup(srv.Close)
	return srv, hits
}

func runDispatcher(t *testing.T, cfg delivery.Config) *delivery.Dispatcher {
	t.Helper()
	d, err := delivery.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return d
}

func publish(t *testing.T, b *bus.Bus, msgID string, st gateway.Status, at time.Time) {
	t.Helper()
	if err := pipeline.PublishStatus(context.Background(), b, gateway.StatusEvent{
		MessageID: msgID, Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Status: st, At: at,
	}); err != nil {
		t.Fatal(err)
	}
}

func next(t *testing.T, hits <-chan hit) hit {
	t.Helper()
	select {
	case h := <-hits:
		return h
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook arrived")
	}
	return hit{}
}

// TestStoredEndpointsFollowTheStore creates an endpoint in the store while the dispatcher runs:
// it receives events without a restart and every attempt is in the delivery log; a rotated secret
// signs beside the old one; a deleted endpoint's consumer is removed from the stream.
func TestStoredEndpointsFollowTheStore(t *testing.T) {
	b := openBus(t)
	db := openStore(t)
	srv, hits := receiver(t)
	watch := attemptWatch{DB: db, recorded: make(chan store.WebhookAttempt, 16)}
	d := runDispatcher(t, delivery.Config{Bus: b, Sealer: noSealer{}, Store: watch, Refresh: time.Hour, Log: zerolog.Nop()})

	first := delivery.NewSecret()
	now := time.Now()
	if err := db.CreateWebhook(t.Context(), store.Webhook{ID: "wh_1", Tenant: "acme", URL: srv.URL, AllowPrivate: true,
		Events: []string{delivery.EventMessageStatus}, Secrets: []store.WebhookSecret{{Value: first, CreatedAt: now}}}); err != nil {
		t.Fatal(err)
	}
	d.Changed()
	publish(t, b, "msg_1", gateway.StatusSent, now)
	h := next(t, hits)
	if err := verify(first, h.header, h.body, time.Now()); err != nil {
		t.Fatalf("signature: %v", err)
	}
	<-watch.recorded
	log, _, err := db.WebhookAttempts(t.Context(), "acme", "wh_1", "", 10)
	if err != nil || len(log) != 1 {
		t.Fatalf("delivery log %+v %v", log, err)
	}
	if a := log[0]; a.Event != delivery.EventMessageStatus || a.EventID != h.id || a.MessageID != "msg_1" || a.Attempt != 1 ||
		a.StatusCode != http.StatusOK || a.Error != "" || a.At.IsZero() {
		t.Fatalf("log line %+v", a)
	}

	second := delivery.NewSecret()
	if _, err := db.RotateWebhookSecret(t.Context(), "acme", "wh_1", second, time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	d.Changed()
	// The swap happens on the sync; each event after it is signed by both secrets.
	for i := 0; ; i++ {
		// A new message each time: the bus drops a repeated one as a duplicate.
		publish(t, b, fmt.Sprintf("msg_2_%d", i), gateway.StatusSent, time.Now())
		h = next(t, hits)
		if verify(second, h.header, h.body, time.Now()) == nil {
			break
		}
		if i == 20 {
			t.Fatal("the rotated secret never signed")
		}
	}
	if err := verify(first, h.header, h.body, time.Now()); err != nil {
		t.Fatalf("during the overlap the old secret verifies too: %v", err)
	}

	if err := db.DeleteWebhook(t.Context(), "acme", "wh_1"); err != nil {
		t.Fatal(err)
	}
	d.Changed()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := b.Backlog(t.Context(), bus.StreamStatus, "webhook_acme_wh_1_status")
		if gateway.ErrorCode(err) == gateway.ENotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deleted endpoint's consumer is still there: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // no event marks the deletion: poll with a deadline
	}
}

// TestPersistentFailureDisablesTheEndpoint: an endpoint whose every attempt fails past the retry
// period is disabled after DisableAfter events given up, with a reason, and a webhook.disabled
// event reaches the tenant's endpoints subscribed to it.
func TestPersistentFailureDisablesTheEndpoint(t *testing.T) {
	b := openBus(t)
	db := openStore(t)
	watch := disableWatch{DB: db, disabled: make(chan string, 1)}
	var healthy atomic.Bool
	recovered := make(chan []byte, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		body, _ := io.ReadAll(r.Body)
		recovered <- body
	}))
	defer srv.Close()
	opsSrv, ops := receiver(t)
	opsKey, _ := delivery.ParseSecret(delivery.NewSecret())
	clock := &fakeClock{now: time.Now()}
	d := runDispatcher(t, delivery.Config{Bus: b, Sealer: noSealer{}, Store: watch, Refresh: time.Hour, Clock: clock, Publisher: b,
		MaxAge: time.Hour, DisableAfter: 2, Jitter: func() float64 { return 0 }, Log: zerolog.Nop(),
		Endpoints: []delivery.Endpoint{{ID: "ops", Tenant: "acme", URL: opsSrv.URL, Secrets: []delivery.Secret{opsKey}, AllowPrivate: true,
			Events: []string{delivery.EventWebhookDisabled}}}})
	if err := db.CreateWebhook(t.Context(), store.Webhook{ID: "wh_1", Tenant: "acme", URL: srv.URL, AllowPrivate: true,
		Secrets: []store.WebhookSecret{{Value: delivery.NewSecret(), CreatedAt: clock.Now()}}}); err != nil {
		t.Fatal(err)
	}
	d.Changed()
	publish(t, b, "msg_1", gateway.StatusSent, clock.Now())
	publish(t, b, "msg_2", gateway.StatusSent, clock.Now())
	select {
	case got := <-watch.disabled:
		if got != "wh_1:"+delivery.DisabledPersistentFailure {
			t.Fatalf("disabled %s", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the failing endpoint was never disabled")
	}
	w, err := db.Webhook(t.Context(), "acme", "wh_1")
	if err != nil || w.DisabledAt.IsZero() {
		t.Fatalf("stored %+v %v", w, err)
	}
	h := next(t, ops)
	var p struct {
		Type string
		Data gateway.WebhookDisabledData
	}
	if err := json.Unmarshal(h.body, &p); err != nil || p.Type != delivery.EventWebhookDisabled || p.Data.Webhook != "wh_1" ||
		p.Data.Reason != delivery.DisabledPersistentFailure {
		t.Fatalf("webhook.disabled event %s: %v", h.body, err)
	}
	log, _, _ := db.WebhookAttempts(t.Context(), "acme", "wh_1", "", 500)
	if len(log) < 2 || log[0].Error != "http_5xx" || log[0].StatusCode != http.StatusBadGateway {
		t.Fatalf("delivery log %+v", log)
	}

	// Enabled again (the receiver fixed), it takes events at once.
	healthy.Store(true)
	reg := delivery.NewRegistry(delivery.RegistryConfig{Store: db, Dispatcher: d, Now: clock.Now})
	if w, err := reg.Enable(t.Context(), "acme", "wh_1"); err != nil || !w.DisabledAt.IsZero() {
		t.Fatalf("enable: %+v %v", w, err)
	}
	publish(t, b, "msg_3", gateway.StatusSent, clock.Now())
	// It subscribes to every event type, so the news of its own disabling may come first.
	timeout := time.After(30 * time.Second)
	for {
		select {
		case body := <-recovered:
			if strings.Contains(string(body), "msg_3") {
				return
			}
			if !strings.Contains(string(body), delivery.EventWebhookDisabled) {
				t.Fatalf("after enabling: %s", body)
			}
		case <-timeout:
			t.Fatal("the enabled endpoint got nothing")
		}
	}
}

// TestReplayKeepsTheWebhookIDs: a replay since a time re-delivers the endpoint's events from the
// stream, in order, each with the webhook-id of its first delivery, and nothing older.
func TestReplayKeepsTheWebhookIDs(t *testing.T) {
	b := openBus(t)
	db := openStore(t)
	srv, hits := receiver(t)
	secret := delivery.NewSecret()
	key, _ := delivery.ParseSecret(secret)
	d := runDispatcher(t, delivery.Config{Bus: b, Sealer: noSealer{}, Store: db, Refresh: time.Hour, Log: zerolog.Nop(),
		Endpoints: []delivery.Endpoint{{ID: "crm", Tenant: "acme", URL: srv.URL, Secrets: []delivery.Secret{key}, AllowPrivate: true}}})

	publish(t, b, "msg_0", gateway.StatusSent, time.Now())
	before := next(t, hits).id
	since := time.Now()
	var first []string
	for _, id := range []string{"msg_1", "msg_2"} {
		publish(t, b, id, gateway.StatusSent, time.Now())
		first = append(first, next(t, hits).id)
	}
	done := make(chan int, 1)
	if err := d.Replay("acme", "crm", since, func(sent int, err error) {
		if err != nil {
			t.Errorf("replay: %v", err)
		}
		done <- sent
	}); err != nil {
		t.Fatal(err)
	}
	var again []string
	for range first {
		h := next(t, hits)
		if err := verify(secret, h.header, h.body, time.Now()); err != nil {
			t.Fatalf("replayed event: %v", err)
		}
		again = append(again, h.id)
	}
	if sent := <-done; sent != len(first) {
		t.Fatalf("replay sent %d, want %d", sent, len(first))
	}
	if again[0] != first[0] || again[1] != first[1] || again[0] == before {
		t.Fatalf("replayed ids %v, first delivered as %v (before the replay's start: %s)", again, first, before)
	}
	if err := d.Replay("acme", "nope", since, nil); gateway.ErrorCode(err) != gateway.EConflict {
		t.Fatalf("replay of an endpoint not running: %v", err)
	}
}

// TestDeliveryLogRetention: the dispatcher deletes delivery log lines older than LogRetention.
func TestDeliveryLogRetention(t *testing.T) {
	b := openBus(t)
	db := openStore(t)
	now := time.Now()
	for _, age := range []time.Duration{10 * 24 * time.Hour, time.Hour} {
		if err := db.RecordWebhookAttempt(t.Context(), store.WebhookAttempt{Tenant: "acme", Webhook: "wh_1", Event: delivery.EventMessageStatus,
			EventID: "evt_status_1", Attempt: 1, StatusCode: 200, At: now.Add(-age)}); err != nil {
			t.Fatal(err)
		}
	}
	runDispatcher(t, delivery.Config{Bus: b, Sealer: noSealer{}, Store: db, Refresh: time.Hour, LogRetention: 7 * 24 * time.Hour, Log: zerolog.Nop()})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) { // no event marks a purge
		log, _, err := db.WebhookAttempts(t.Context(), "acme", "wh_1", "", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(log) == 1 && log[0].At.After(now.Add(-2*time.Hour)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log after retention: %+v", log)
		}
	}
}
