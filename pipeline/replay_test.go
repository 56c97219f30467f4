package pipeline_test

import (
	"context"
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/store"
)

// replays finds messages in a fakeStore by idempotency key, as store/sql does.
type replays struct {
	st  *fakeStore
	err error
}

func (r replays) MessageByIdempotencyKey(_ context.Context, tenant, key string) (*gateway.Message, string, error) {
	if r.err != nil {
		return nil, "", r.err
	}
	r.st.mu.Lock()
	defer r.st.mu.Unlock()
	id, ok := r.st.idem[tenant+"/"+key]
	if !ok {
		return nil, "", gateway.Errorf(gateway.ENotFound, "no message")
	}
	c := *r.st.msgs[id]
	return &c, r.st.hashes[id], nil
}

// TestIntakeReplayBeforeStages: a replayed Idempotency-Key gets its original message even when a
// stage now refuses the recipient; a new key is refused; a failing lookup is an error, not a send.
func TestIntakeReplayBeforeStages(t *testing.T) {
	st := newFakeStore()
	optedOut := false
	stage := pipeline.StageFunc(func(context.Context, *gateway.Message) error {
		if optedOut {
			return gateway.Errorf(gateway.ERecipientOptedOut, "opted out")
		}
		return nil
	})
	in, err := pipeline.NewIntake(pipeline.IntakeConfig{Store: st, Bus: &fakeBus{}, Replays: replays{st: st}, Stages: []pipeline.Stage{stage}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first := newOutbound(t)
	first.IdempotencyKey = "k1"
	if _, _, created, err := in.Accept(ctx, store.NewMessage{Message: first, RequestHash: "h1"}); err != nil || !created {
		t.Fatalf("first: %v %v", created, err)
	}
	optedOut = true
	again := newOutbound(t)
	again.IdempotencyKey = "k1"
	got, hash, created, err := in.Accept(ctx, store.NewMessage{Message: again, RequestHash: "h1"})
	if err != nil || created || got.ID != first.ID || hash != "h1" {
		t.Fatalf("replay after opt-out: %v %v %q %v", got, created, hash, err)
	}
	fresh := newOutbound(t)
	fresh.IdempotencyKey = "k2"
	if _, _, _, err := in.Accept(ctx, store.NewMessage{Message: fresh, RequestHash: "h2"}); gateway.ErrorCode(err) != gateway.ERecipientOptedOut {
		t.Fatalf("new key after opt-out: %v", err)
	}
	broken, _ := pipeline.NewIntake(pipeline.IntakeConfig{Store: st, Bus: &fakeBus{}, Replays: replays{err: gateway.Errorf(gateway.EUnavailable, "db down")}})
	m := newOutbound(t)
	m.IdempotencyKey = "k3"
	if _, _, _, err := broken.Accept(ctx, store.NewMessage{Message: m}); gateway.ErrorCode(err) != gateway.EUnavailable {
		t.Fatalf("lookup failure: %v", err)
	}
}
