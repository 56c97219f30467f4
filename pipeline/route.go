package pipeline

import (
	"context"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// RouteStage is the last stage before dispatch: it checks that the message names a channel
// account that exists, so nothing waits in a dispatch queue that no runner reads. (The Router
// then publishes to that account's dispatch subject.)
type RouteStage struct {
	// Known reports whether the tenant has the account on the channel; nil accepts every account.
	// It is asked on every message, so a config reload that removes an account takes effect at
	// once.
	Known func(tenant string, channel gateway.Channel, account string) bool
}

// Check implements Stage: unknown_channel or unknown_account reject the message.
func (s RouteStage) Check(_ context.Context, m *gateway.Message) error {
	if !m.Channel.Valid() {
		return gateway.Errorf(gateway.EUnknownChannel, "unknown channel %q", m.Channel)
	}
	if m.Account == "" || (s.Known != nil && !s.Known(m.Tenant, m.Channel, m.Account)) {
		return gateway.Errorf(gateway.EUnknownAccount, "tenant %s has no %s account %q", m.Tenant, m.Channel, m.Account)
	}
	return nil
}
