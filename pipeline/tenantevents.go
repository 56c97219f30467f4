package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
)

// PublishTenantEvent publishes a tenant event of type typ ("consent.changed") with data on EVENTS
// sb.event.<tenant>.<kind>, kind being the type's first word; its id is the Nats-Msg-Id.
func PublishTenantEvent(ctx context.Context, p Publisher, tenant, typ string, at time.Time, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	if at.IsZero() {
		at = time.Now()
	}
	ev := gateway.TenantEvent{ID: gateway.NewID("tev"), Type: typ, Tenant: tenant, At: at.UTC(), Data: b}
	payload, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	kind, _, _ := strings.Cut(typ, ".")
	if err := p.Publish(ctx, bus.EventSubject(tenant, kind), ev.ID, payload); err != nil {
		return fmt.Errorf("pipeline: publish %s event: %w", typ, err)
	}
	return nil
}
