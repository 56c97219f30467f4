package delivery_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

// verify is an independent implementation of the Standard Webhooks verification: it decodes
// the whsec_ secret, recomputes HMAC-SHA256 over "id.timestamp.body" and accepts when any
// "v1,<base64>" signature in the header matches, within a 5-minute timestamp tolerance.
func verify(secret string, h http.Header, body []byte, now time.Time) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook headers")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return err
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("timestamp outside tolerance")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no matching signature")
}

// fakeClock advances by each delay a retry asks for, at once, and remembers the delays.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	delays []time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.delays = append(c.delays, d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *fakeClock) waited() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.delays...)
}

// noSealer stands in for the keyring: these tests send status events only.
type noSealer struct{}

func (noSealer) BlindIndex(context.Context, string, string) (string, error) { return "", nil }
func (noSealer) Seal(context.Context, string, string, crypt.AD, []byte) ([]byte, error) {
	return nil, errors.New("no sealer")
}
func (noSealer) Open(context.Context, string, string, crypt.AD, []byte) ([]byte, error) {
	return nil, errors.New("no sealer")
}

func openBus(t *testing.T) *bus.Bus {
	t.Helper()
	b, err := bus.Open(context.Background(), bus.Config{Embedded: &bus.Embedded{StoreDir: t.TempDir()}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b
}

// received is what the receiver accepted, in order.
type received struct {
	ID     string
	Type   string
	Status gateway.Status
}

func TestRetriesUntilDeliveredOnceInOrderSigned(t *testing.T) {
	b := openBus(t)
	oldSecret, newSecret := delivery.NewSecret(), delivery.NewSecret()
	var secrets []delivery.Secret
	for _, s := range []string{oldSecret, newSecret} {
		k, err := delivery.ParseSecret(s)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, k)
	}
	clock := &fakeClock{now: time.Now()}

	var mu sync.Mutex
	attempts := 0
	var got []received
	arrived := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		// The receiver knows only the new secret: the rotation keeps it verifying.
		if err := verify(newSecret, r.Header, body, clock.Now()); err != nil {
			t.Errorf("signature: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts <= 5 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		var p struct {
			Type string
			Data gateway.StatusEvent
		}
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("body: %v", err)
		}
		got = append(got, received{ID: r.Header.Get("webhook-id"), Type: p.Type, Status: p.Data.Status})
		w.WriteHeader(http.StatusNoContent)
		arrived <- struct{}{}
	}))
	defer srv.Close()

	d, err := delivery.New(delivery.Config{
		Bus: b, Sealer: noSealer{}, Clock: clock, Jitter: func() float64 { return 0.5 },
		Endpoints: []delivery.Endpoint{{ID: "crm", Tenant: "acme", URL: srv.URL, Secrets: secrets, AllowPrivate: true,
			Events: []string{delivery.EventMessageStatus}}},
		Log: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	for _, st := range []gateway.Status{gateway.StatusSent, gateway.StatusDelivered, gateway.StatusRead} {
		if err := pipeline.PublishStatus(ctx, b, gateway.StatusEvent{
			MessageID: "msg_1", Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Status: st, At: clock.Now(),
		}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		select {
		case <-arrived:
		case <-time.After(30 * time.Second):
			t.Fatal("webhooks did not arrive")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts != 5+3 {
		t.Errorf("%d attempts, want 5 failures and 3 successes", attempts)
	}
	want := []gateway.Status{gateway.StatusSent, gateway.StatusDelivered, gateway.StatusRead}
	ids := map[string]bool{}
	for i, r := range got {
		if r.Type != "message.status" || r.Status != want[i] || ids[r.ID] {
			t.Errorf("delivery %d: %+v (want %s, each id once)", i, r, want[i])
		}
		ids[r.ID] = true
	}
	// Exponential backoff with jitter 0.5: three quarters of 5s·2^(n-1).
	delays := clock.waited()
	if len(delays) != 5 {
		t.Fatalf("delays %v", delays)
	}
	for i, dl := range delays {
		if full := delivery.DefaultBaseDelay << i; dl != full*3/4 {
			t.Errorf("delay %d = %v, want %v", i+1, dl, full*3/4)
		}
	}
}

func TestSignMatchesTheSpecExample(t *testing.T) {
	// The example of the Standard Webhooks specification (standard-webhooks.com).
	secret, err := delivery.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"test": 2432232314}`)
	got := delivery.Sign([]delivery.Secret{secret}, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), body)
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	h := http.Header{}
	h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", got)
	if err := verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", h, body, time.Unix(1614265330, 0)); err != nil {
		t.Fatal(err)
	}
}

func TestBadSecretsAndEndpoints(t *testing.T) {
	good, _ := delivery.ParseSecret(delivery.NewSecret())
	tests := []struct {
		name string
		e    delivery.Endpoint
	}{
		{"no secret", delivery.Endpoint{ID: "a", Tenant: "acme", URL: "https://example.com/hook"}},
		{"three secrets", delivery.Endpoint{ID: "a", Tenant: "acme", URL: "https://example.com/hook", Secrets: []delivery.Secret{good, good, good}}},
		{"ftp url", delivery.Endpoint{ID: "a", Tenant: "acme", URL: "ftp://example.com/", Secrets: []delivery.Secret{good}}},
		{"dotted id", delivery.Endpoint{ID: "a.b", Tenant: "acme", URL: "https://example.com/hook", Secrets: []delivery.Secret{good}}},
		{"unknown event", delivery.Endpoint{ID: "a", Tenant: "acme", URL: "https://example.com/hook", Secrets: []delivery.Secret{good}, Events: []string{"message.nope"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := delivery.New(delivery.Config{Bus: &bus.Bus{}, Sealer: noSealer{}, Endpoints: []delivery.Endpoint{tt.e}})
			if gateway.ErrorCode(err) != gateway.EInvalidField {
				t.Fatalf("err = %v, want invalid_field", err)
			}
		})
	}
	for _, s := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!", "whsec_c2hvcnQ="} {
		if _, err := delivery.ParseSecret(s); gateway.ErrorCode(err) != gateway.EInvalidField {
			t.Errorf("ParseSecret(%q) = %v", s, err)
		}
	}
}

// TestRestartBetweenAttemptsLosesNothing stops the dispatcher while an event is failing and
// starts another on the same bus: the event, never acknowledged, is delivered by the second.
func TestRestartBetweenAttemptsLosesNothing(t *testing.T) {
	b := openBus(t)
	secret, _ := delivery.ParseSecret(delivery.NewSecret())
	var mu sync.Mutex
	up := false
	failed := make(chan struct{}, 100)
	delivered := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if !up {
			w.WriteHeader(http.StatusServiceUnavailable)
			select {
			case failed <- struct{}{}:
			default:
			}
			return
		}
		delivered <- r.Header.Get("webhook-id")
	}))
	defer srv.Close()
	cfg := delivery.Config{
		Bus: b, Sealer: noSealer{}, Clock: stuckClock{time.Now()}, // the first retry waits until the stop
		Endpoints: []delivery.Endpoint{{ID: "crm", Tenant: "acme", URL: srv.URL, Secrets: []delivery.Secret{secret}, AllowPrivate: true}},
		Log:       zerolog.Nop(),
	}
	run := func() (stop func()) {
		d, err := delivery.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	stop := run()
	if err := pipeline.PublishStatus(context.Background(), b, gateway.StatusEvent{
		MessageID: "msg_1", Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Status: gateway.StatusSent, At: time.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-failed:
	case <-time.After(30 * time.Second):
		t.Fatal("no attempt")
	}
	stop()
	mu.Lock()
	up = true
	mu.Unlock()
	stop = run()
	defer stop()
	select {
	case id := <-delivered:
		if id != "evt_status_1" {
			t.Errorf("webhook-id %q", id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the event was lost across the restart")
	}
}

// stuckClock's delays never end: a retry waits until the dispatcher stops.
type stuckClock struct{ now time.Time }

func (c stuckClock) Now() time.Time                     { return c.now }
func (stuckClock) After(time.Duration) <-chan time.Time { return nil }
