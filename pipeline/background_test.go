package pipeline_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/store"
)

// batchBus records batch publishes; the first failN messages fail.
type batchBus struct {
	fakeBus
	mu      sync.Mutex
	batches [][]bus.Outgoing
	failN   int
	got     chan struct{} // a batch was published
}

func (b *batchBus) PublishBatch(_ context.Context, msgs []bus.Outgoing) []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batches = append(b.batches, msgs)
	errs := make([]error, len(msgs))
	for i := range msgs {
		if b.failN > 0 {
			b.failN--
			errs[i] = errors.New("bus down")
		}
	}
	b.got <- struct{}{}
	return errs
}

func (b *batchBus) ids() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, batch := range b.batches {
		for _, m := range batch {
			out = append(out, m.MsgID)
		}
	}
	return out
}

// TestIntakeBackground: with a background publisher, Accept queues the dispatch and Run publishes
// it to SEND in batches; a failed publish goes to Retry (the resumer); what is still queued when
// Run stops is published before it returns; Accept itself never publishes.
func TestIntakeBackground(t *testing.T) {
	b := &batchBus{got: make(chan struct{}, 100), failN: 1}
	var retried []string
	in, err := pipeline.NewIntake(pipeline.IntakeConfig{Store: newFakeStore(), Bus: &b.fakeBus, Background: b,
		Retry: func(d gateway.Dispatch) { retried = append(retried, d.MessageID) }})
	if err != nil {
		t.Fatal(err)
	}
	accept := func() string {
		m, _, created, err := in.Accept(context.Background(), store.NewMessage{Message: newOutbound(t)})
		if err != nil || !created {
			t.Fatalf("accept: %v", err)
		}
		return m.ID
	}
	// Queued while Run is not running: Accept publishes nothing itself.
	first, second := accept(), accept()
	if len(b.fakeBus.all()) != 0 || len(b.ids()) != 0 {
		t.Fatalf("Accept published: %v %v", b.fakeBus.all(), b.ids())
	}
	// Run stopping publishes what is still queued before it returns.
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	if err := in.Run(stopped); err != nil {
		t.Fatal(err)
	}
	if ids := b.ids(); len(ids) != 2 || ids[0] != first || ids[1] != second {
		t.Fatalf("drained %v, want %s and %s", ids, first, second)
	}
	if len(retried) != 1 || retried[0] != first {
		t.Fatalf("retried %v, want the failed %s", retried, first)
	}
	// Running, it publishes what Accept queues, to the tenant's SEND subject.
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	third := accept()
	for len(b.ids()) < 3 {
		<-b.got
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ids := b.ids(); ids[2] != third {
		t.Fatalf("published %v, want %s last", ids, third)
	}
	for _, batch := range b.batches {
		for _, m := range batch {
			if m.Subject != bus.SendSubject("acme") {
				t.Fatalf("published to %s", m.Subject)
			}
		}
	}
}
