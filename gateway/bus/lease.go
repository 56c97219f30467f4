package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// LeaseBucket is the JetStream key-value bucket that holds the leases (DESIGN.md §3.7).
const LeaseBucket = "sb_leases"

// DefaultLeaseTTL is how long a lease outlives its holder's last renewal.
const DefaultLeaseTTL = 15 * time.Second

// ErrLeaseLost is the cause of a Hold context that ended because the lease could not be renewed
// in time, or another holder has it now.
var ErrLeaseLost = errors.New("bus: lease lost")

// Leases hands out exclusive leases on names ("whatsapp.acme.sales") shared by every process on
// the bus: at most one holder at a time. A lease is a key in LeaseBucket whose value names its
// holder; the holder renews it every third of the TTL, and the bucket's TTL removes it when the
// holder dies, so another process takes over within about one TTL. A holder that stops cleanly
// deletes its key, and a waiting process takes over at once.
type Leases struct {
	b      *Bus
	ttl    time.Duration
	holder string

	mu sync.Mutex
	kv jetstream.KeyValue
}

// Leases returns the lease keeper of this process: ttl 0 means DefaultLeaseTTL; holder names this
// process in the bucket ("" for a random name).
func (b *Bus) Leases(ttl time.Duration, holder string) *Leases {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	if holder == "" {
		r := make([]byte, 8)
		_, _ = rand.Read(r)
		holder = "h_" + hex.EncodeToString(r)
	}
	return &Leases{b: b, ttl: ttl, holder: holder}
}

// Holder is the name this process holds leases under.
func (l *Leases) Holder() string { return l.holder }

func (l *Leases) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kv != nil {
		return l.kv, nil
	}
	ctx, cancel := context.WithTimeout(ctx, defaultOpTimeout)
	defer cancel()
	cfg := jetstream.KeyValueConfig{
		Bucket:      LeaseBucket,
		Description: "which process holds which channel account",
		History:     1,
		TTL:         l.ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    l.b.cfg.Replicas,
		// Markers tell watchers when a dead holder's key expires (NATS 2.11+).
		LimitMarkerTTL: max(l.ttl, time.Second),
	}
	kv, err := l.b.js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		// An older server without expiry markers: waiters then notice an expiry by retrying.
		cfg.LimitMarkerTTL = 0
		var err2 error
		if kv, err2 = l.b.js.CreateOrUpdateKeyValue(ctx, cfg); err2 != nil {
			return nil, gateway.WrapError(gateway.EUnavailable, errors.Join(err, err2), "bus: lease bucket")
		}
	}
	l.kv = kv
	return kv, nil
}

// Hold waits until this process holds the lease on name, then runs fn with a context that ends
// when ctx does or when the lease is lost (context.Cause is then ErrLeaseLost). After fn returns
// it releases the lease and returns fn's error. When ctx ends before the lease is held, Hold
// returns nil without calling fn. name must be a valid key: letters, digits, '-', '_', '.'.
func (l *Leases) Hold(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	kv, err := l.bucket(ctx)
	if err != nil {
		return err
	}
	rev, err := l.acquire(ctx, kv, name)
	if err != nil || ctx.Err() != nil {
		return err
	}
	lctx, lose := context.WithCancelCause(ctx)
	defer lose(nil)
	renewed := make(chan uint64, 1)
	go func() { renewed <- l.renew(lctx, lose, kv, name, rev) }()
	ferr := fn(lctx)
	lose(nil)
	last := <-renewed
	if last != 0 {
		// Release: a waiting process takes over at once instead of after the TTL.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultOpTimeout)
		if err := kv.Delete(dctx, name, jetstream.LastRevision(last)); err != nil {
			l.b.log.Debug().Err(err).Str("lease", name).Msg("could not release the lease; it expires by itself")
		}
		cancel()
	}
	return ferr
}

// acquire returns the revision of the lease once held, or 0 and nil when ctx ended.
func (l *Leases) acquire(ctx context.Context, kv jetstream.KeyValue, name string) (uint64, error) {
	var updates <-chan jetstream.KeyValueEntry
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	retry := time.NewTicker(l.ttl / 3) // expiries without markers, and transient errors
	defer retry.Stop()
	logged := false
	for {
		rev, err := kv.Create(ctx, name, []byte(l.holder))
		if err == nil {
			l.b.log.Info().Str("lease", name).Str("holder", l.holder).Msg("lease acquired")
			return rev, nil
		}
		if ctx.Err() != nil {
			return 0, nil
		}
		if errors.Is(err, jetstream.ErrInvalidKey) {
			return 0, gateway.WrapError(gateway.EInvalidField, err, "bus: lease name %q", name)
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			l.b.log.Warn().Err(err).Str("lease", name).Msg("could not take the lease; retrying")
		} else if !logged {
			logged = true
			if e, gerr := kv.Get(ctx, name); gerr == nil {
				l.b.log.Info().Str("lease", name).Str("holder", string(e.Value())).Msg("lease held by another process; waiting")
			}
		}
		if updates == nil {
			if w, werr := kv.Watch(wctx, name, jetstream.UpdatesOnly()); werr == nil {
				updates = w.Updates()
			}
		}
		select {
		case <-ctx.Done():
			return 0, nil
		case e, ok := <-updates:
			if !ok {
				updates = nil
			}
			_ = e // any change (a release, an expiry marker) is worth another try
		case <-retry.C:
		}
	}
}

// renew keeps the lease until ctx ends, calling lose(ErrLeaseLost) when another holder has it or
// no renewal succeeded for a TTL. It returns the lease's last revision, 0 when it was lost.
func (l *Leases) renew(ctx context.Context, lose context.CancelCauseFunc, kv jetstream.KeyValue, name string, rev uint64) uint64 {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return rev
		case <-t.C:
		}
		uctx, cancel := context.WithTimeout(ctx, l.ttl/3)
		next, err := kv.Update(uctx, name, []byte(l.holder), rev)
		cancel()
		switch {
		case err == nil:
			rev, lastOK = next, time.Now()
			continue
		case ctx.Err() != nil:
			return rev
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists):
			l.b.log.Warn().Str("lease", name).Msg("lease taken over by another process")
		case time.Since(lastOK) < l.ttl*2/3:
			l.b.log.Warn().Err(err).Str("lease", name).Msg("could not renew the lease; retrying")
			continue
		default:
			// Others may take over once the TTL runs out: stop before that.
			l.b.log.Warn().Err(err).Str("lease", name).Msg("could not renew the lease in time; giving it up")
		}
		lose(fmt.Errorf("%w: %s", ErrLeaseLost, name))
		return 0
	}
}
