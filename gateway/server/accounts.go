package server

import (
	"context"
	"sync"
	"time"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/adapters/sandbox"
	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
)

// StateReporter is a driver's adapter with a connection state of its own (WhatsApp on
// whatsmeow); its State is a word of GET /v1/accounts (api.AccountConnected, api.AccountUnlinked, …).
type StateReporter interface {
	AccountState() adapters.AccountState
}

// DeviceLinker is a driver's adapter that links a device to its account (WhatsApp on whatsmeow):
// the flow behind POST /v1/accounts/whatsapp/{account}/link, with the contract of api.Linker.
// step reports each step by kind (api.LinkEventQR, api.LinkEventPairingCode, api.LinkEventNotice).
type DeviceLinker interface {
	LinkDevice(ctx context.Context, phone string, step func(kind, code, message string, expires time.Duration)) (maskedPhone string, err error)
}

// accounts answers GET /v1/accounts and links accounts for the API, over the configuration and
// the adapters built from it. Links end when done closes (the HTTP server shuts down), so a link
// left open in a browser does not hold the shutdown up.
type accounts struct {
	cfg      *config.Config
	adapters map[accountKey]adapters.Adapter
	done     <-chan struct{}
}

// newAccounts returns the API's view of the accounts. Call it after the event source: its links end
// with the event streams (endStreams), when the HTTP server shuts down.
func (s *Server) newAccounts() accounts {
	done := make(chan struct{})
	endEvents := s.endStreams
	s.endStreams = sync.OnceFunc(func() {
		if endEvents != nil {
			endEvents()
		}
		close(done)
	})
	return accounts{cfg: s.cfg, adapters: s.adapters, done: done}
}

var (
	_ api.Accounts = accounts{}
	_ api.Linker   = accounts{}
)

func (a accounts) Accounts(_ context.Context, tenant string) ([]api.Account, error) {
	t := a.cfg.Tenant(tenant)
	if t == nil {
		return nil, nil
	}
	var out []api.Account
	for _, ch := range gateway.Channels {
		cc := t.Channel(ch)
		if cc == nil {
			continue
		}
		for _, acct := range cc.Accounts {
			ad := a.adapters[accountKey{tenant, ch, acct.Name}]
			out = append(out, describeAccount(ch, acct, ad))
		}
	}
	return out, nil
}

func describeAccount(ch gateway.Channel, acct config.AccountConfig, ad adapters.Adapter) api.Account {
	out := api.Account{Channel: ch, Account: acct.Name, Driver: acct.Driver, State: api.AccountReady}
	if sr, ok := ad.(StateReporter); ok {
		st := sr.AccountState()
		out.State, out.Detail = st.State, st.Detail
		out.Since, out.BannedUntil, out.LastConnected = timePtr(st.Since), timePtr(st.BannedUntil), timePtr(st.LastConnected)
		out.LastSeenPhone = timePtr(st.LastSeenPhone)
	}
	out.Linkable = ch == gateway.WhatsApp && linkable(ad)
	return out
}

func linkable(ad adapters.Adapter) bool {
	switch ad.(type) {
	case *sandbox.Adapter, DeviceLinker:
		return true
	}
	return false
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// Link links a WhatsApp account: the driver's own flow, or the sandbox's simulation.
func (a accounts) Link(ctx context.Context, tenant, account, phone string, emit func(api.LinkEvent)) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-a.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	switch ad := a.adapters[accountKey{tenant, gateway.WhatsApp, account}].(type) {
	case *sandbox.Adapter:
		return ad.Link(ctx, phone, func(s sandbox.LinkStep) {
			if s.PairingCode {
				emit(api.LinkEvent{Type: api.LinkEventPairingCode, Code: s.Code, Message: "sandbox: nothing to type, the link completes by itself"})
				return
			}
			emit(api.LinkEvent{Type: api.LinkEventQR, Code: s.Code, Expires: s.For})
		})
	case DeviceLinker:
		return ad.LinkDevice(ctx, phone, func(kind, code, message string, expires time.Duration) {
			emit(api.LinkEvent{Type: kind, Code: code, Message: message, Expires: expires})
		})
	case nil:
		return "", gateway.Errorf(gateway.ENotFound, "no whatsapp account named %q for this tenant", account)
	default:
		return "", gateway.FieldErrorf(gateway.EInvalidField, "account", "whatsapp account %q has a driver that does not link devices", account)
	}
}

// stateOf is the state an account's readiness check shows beside it.
func (a accounts) stateOf(k accountKey) func() string {
	return func() string {
		return describeAccount(k.channel, config.AccountConfig{}, a.adapters[k]).State
	}
}
