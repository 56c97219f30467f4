package delivery

import (
	"context"
	"encoding/json"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/store"
)

// Replay re-delivers, in the background, the events of the endpoint's subscriptions that the
// streams stored since `since`. Each keeps the webhook-id of its first delivery, so a receiver
// that deduplicates by it sees nothing twice. One attempt per event; the replay stops at the first
// failure, so events arrive in order (the delivery log shows where: replay again from there).
// done, when not nil, is called with the replay's outcome.
func (d *Dispatcher) Replay(tenant, id string, since time.Time, done func(sent int, err error)) error {
	key := tenant + "/" + id
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.running[key]
	switch {
	case d.runCtx == nil || d.runCtx.Err() != nil:
		return gateway.Errorf(gateway.EUnavailable, "webhook delivery is not running")
	case r == nil:
		return gateway.Errorf(gateway.EConflict, "webhook %s is disabled: enable it before replaying", id)
	case d.replaying[key]:
		return gateway.Errorf(gateway.EConflict, "a replay of webhook %s is under way", id)
	}
	d.replaying[key] = true
	ctx := d.runCtx
	d.wg.Go(func() {
		sent, err := d.replay(ctx, r, since)
		d.mu.Lock()
		delete(d.replaying, key)
		d.mu.Unlock()
		e, _ := r.current()
		ev := d.cfg.Log.Info()
		if err != nil {
			ev = d.cfg.Log.Warn().Err(err)
		}
		ev.Str("event", "webhook_replay").Str("tenant", e.Tenant).Str("webhook", e.ID).Time("since", since).Int("sent", sent).Send()
		if done != nil {
			done(sent, err)
		}
	})
	return nil
}

// errReplayStopped ends a replay at the first failed attempt.
var errReplayStopped = gateway.Errorf(gateway.EUnavailable, "the endpoint failed an attempt: replay stopped")

func (d *Dispatcher) replay(ctx context.Context, r *endpointRun, since time.Time) (int, error) {
	e, _ := r.current()
	sent := 0
	for _, sub := range subscriptions(e) {
		err := d.cfg.Bus.FollowSince(ctx, sub.filter, since, func(m *bus.Msg) error {
			data, msgID, at, ok, err := d.eventData(ctx, sub.event, m)
			if err != nil || !ok {
				return err
			}
			body, err := json.Marshal(payload{Type: sub.event, Timestamp: at.UTC(), Data: data})
			if err != nil {
				return err
			}
			e, client := r.current()
			id := eventID(m)
			start := d.cfg.Clock.Now()
			status, err := d.post(ctx, client, e, id, body)
			latency := d.cfg.Clock.Now().Sub(start)
			d.record(ctx, store.WebhookAttempt{Tenant: e.Tenant, Webhook: e.ID, Event: sub.event, EventID: id, MessageID: msgID,
				Attempt: 1, StatusCode: status, LatencyMS: latency.Milliseconds(), Error: ErrorClass(status, err), At: start})
			if err != nil {
				d.count(r, e, "failed")
				return errReplayStopped
			}
			d.count(r, e, "ok")
			sent++
			return nil
		})
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}
