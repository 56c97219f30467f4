package pipeline

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
)

// PublishStatus publishes ev on STATUS sb.status.<tenant> with Nats-Msg-Id = ev.EventID(), so a
// retried publish of the same change is dropped by the bus (and by the store after the window).
func PublishStatus(ctx context.Context, p Publisher, ev gateway.StatusEvent) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if err := p.Publish(ctx, bus.StatusSubject(ev.Tenant), ev.EventID(), data); err != nil {
		return fmt.Errorf("pipeline: publish %s status of %s: %w", ev.Status, ev.MessageID, err)
	}
	return nil
}
