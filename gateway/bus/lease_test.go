package bus

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// twoClients opens an embedded server that listens, and a second client of it, as two replicas
// of the gateway would share one NATS.
func twoClients(t *testing.T) (*Bus, *Bus) {
	t.Helper()
	const token = "lease-test-token"
	a, err := Open(t.Context(), Config{Embedded: &Embedded{StoreDir: t.TempDir(), StoreKey: testKey, Listen: "127.0.0.1:0", Token: token}}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	url := strings.Replace(a.ClientURL(), "nats://", "nats://"+token+"@", 1)
	b, err := Open(t.Context(), Config{URLs: []string{url}}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return a, b
}

// holding runs Hold in the background; its fn reports when it holds the lease and waits for its
// context to end.
type holding struct {
	held     chan struct{}
	lostWith chan error    // the context's cause when fn's context ended
	done     chan error    // Hold's result
	finished chan struct{} // closed when Hold returned
	cancel   context.CancelFunc
}

func hold(t *testing.T, l *Leases, name string, inside *atomic.Int32) *holding {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	h := &holding{held: make(chan struct{}), lostWith: make(chan error, 1), done: make(chan error, 1), finished: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(h.finished)
		h.done <- l.Hold(ctx, name, func(ctx context.Context) error {
			if n := inside.Add(1); n != 1 {
				t.Errorf("%d holders of %s at once", n, name)
			}
			close(h.held)
			<-ctx.Done()
			inside.Add(-1)
			h.lostWith <- context.Cause(ctx)
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-h.finished
	})
	return h
}

func (h *holding) isHeld() bool {
	select {
	case <-h.held:
		return true
	default:
		return false
	}
}

// TestLeaseOneHolderAndTakeover: of two replicas only one holds an account's lease; when the
// holder stops, the other takes over at once; when the holder dies (its connection gone, no
// release), the other takes over after the TTL.
func TestLeaseOneHolderAndTakeover(t *testing.T) {
	const ttl = time.Second
	tests := []struct {
		name string
		// end stops the first holder: cleanly (cancel), or by killing its connection.
		kill bool
	}{
		{name: "holder stops and releases"},
		{name: "holder dies without releasing", kill: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := twoClients(t)
			var inside atomic.Int32
			la, lb := a.Leases(ttl, "replica-a"), b.Leases(ttl, "replica-b")
			// The killed holder is on the second client: killing it leaves the server running.
			first, second := la, lb
			if tt.kill {
				first, second = lb, la
			}
			h1 := hold(t, first, "whatsapp.acme.sales", &inside)
			recv(t, h1.held, "the first holder")
			h2 := hold(t, second, "whatsapp.acme.sales", &inside)
			// The second waits through several renewals of the first (time must pass to show that
			// nothing happens).
			renewals := time.NewTimer(2 * ttl)
			<-renewals.C
			if h2.isHeld() {
				t.Fatal("two holders")
			}
			other := hold(t, second, "whatsapp.acme.support", new(atomic.Int32))
			recv(t, other.held, "a lease on another account")

			start := time.Now()
			if tt.kill {
				b.nc.Close() // the process is gone: no renewal, no release
				if err := recv(t, h1.lostWith, "the dead holder noticing"); !errors.Is(err, ErrLeaseLost) {
					t.Errorf("cause = %v, want ErrLeaseLost", err)
				}
			} else {
				h1.cancel()
				if err := recv(t, h1.done, "the first holder to return"); err != nil {
					t.Fatal(err)
				}
				// Released, not left to expire: the key is gone (or already the second's) the
				// moment the holder returns, so the waiter's watch takes it at once.
				kv, err := first.bucket(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if e, err := kv.Get(context.Background(), "whatsapp.acme.sales"); err == nil && string(e.Value()) != second.Holder() {
					t.Fatalf("after the release the lease still names %q", e.Value())
				}
			}
			recv(t, h2.held, "the takeover")
			took := time.Since(start)
			t.Logf("taken over after %s", took.Round(time.Millisecond))
			if tt.kill && took > 3*ttl {
				t.Errorf("a dead holder's lease took %s to be taken over", took)
			}
		})
	}
}
