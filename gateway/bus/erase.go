package bus

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DeleteQueued deletes the tenant's queued messages whose Nats-Msg-Id is in ids from the SEND
// and DISPATCH work queues (an erasure: they must not be sent), overwriting them in the store
// file (SecureDeleteMsg). It returns how many it deleted. A message a consumer holds right now
// is deleted too; its ack then fails and it is not redelivered.
func (b *Bus) DeleteQueued(ctx context.Context, tenant string, ids map[string]bool) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	return b.deleteQueued(ctx, tenant, func(id string) bool { return ids[id] })
}

// PurgeTenant deletes every queued message of the tenant from SEND and DISPATCH (a tenant
// erasure) and returns how many it deleted.
func (b *Bus) PurgeTenant(ctx context.Context, tenant string) (int, error) {
	return b.deleteQueued(ctx, tenant, func(string) bool { return true })
}

func (b *Bus) deleteQueued(ctx context.Context, tenant string, match func(msgID string) bool) (int, error) {
	if err := ValidateToken("tenant", tenant); err != nil {
		return 0, err
	}
	n := 0
	for _, q := range []struct{ stream, filter string }{
		{StreamSend, SendSubject(tenant)},
		{StreamDispatch, DispatchSubject("*", tenant, "*")},
	} {
		st, err := b.js.Stream(ctx, q.stream)
		if err != nil {
			return n, notFoundOr(err, "bus: stream %s", q.stream)
		}
		// Walk the tenant's messages in sequence order: each GetMsg returns the first one at or
		// after seq on the filter subject.
		for seq := uint64(1); ; seq++ {
			raw, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(q.filter))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				return n, notFoundOr(err, "bus: read %s", q.stream)
			}
			seq = raw.Sequence
			if !match(raw.Header.Get(nats.MsgIdHdr)) {
				continue
			}
			err = st.SecureDeleteMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
				continue // acknowledged (consumed) meanwhile
			}
			if err != nil {
				return n, notFoundOr(err, "bus: delete from %s", q.stream)
			}
			n++
		}
	}
	return n, nil
}
