package teams

import (
	"context"
	"encoding/json"
	"errors"
	"sync"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store/credstore"
)

// Adapter is one Teams account: it implements adapters.Adapter.
type Adapter struct {
	cfg   Config
	ep    endpoints
	log   zerolog.Logger
	store CredentialStore
	auth  *Auth
	g     *graphClient
	pacer *pacer
	hub   *Notifications

	chatMu    sync.Mutex        // serialises 1:1 chat creation
	userChats map[string]string // AAD user id → 1:1 chat id; nil until loaded

	recent *recentSet // Graph ids recently handed to the sink (duplicate notifications)

	runMu       sync.Mutex
	sink        adapters.Sink // set while Run runs
	clientState string        // the notification secret, loaded by Run
	kick        chan string   // lifecycle events for the subscription loop
}

var _ adapters.Adapter = (*Adapter)(nil)

// New returns the adapter of one account. hub receives the account's change notifications; it
// may be nil when cfg.PublicURL is empty (polling). New makes no network call.
func New(cfg Config, store CredentialStore, hub *Notifications) (*Adapter, error) {
	ep, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	if cfg.PublicURL != "" && hub == nil {
		return nil, errors.New("teams: a public URL is configured but no notification handler was given")
	}
	auth, err := newAuth(cfg, ep, store)
	if err != nil {
		return nil, err
	}
	g, err := newGraphClient(cfg, ep, auth)
	if err != nil {
		return nil, err
	}
	return &Adapter{
		cfg: cfg, ep: ep, store: store, auth: auth, g: g, hub: hub,
		log:    auth.log,
		pacer:  &pacer{clock: cfg.Clock, interval: cfg.SendInterval},
		recent: newRecentSet(4096),
		kick:   make(chan string, 16),
	}, nil
}

// Auth is the account's authentication: Login for `switchboard teams login`, State for
// `switchboard teams accounts` and readiness.
func (a *Adapter) Auth() *Auth { return a.auth }

// Tenant and Account name the account.
func (a *Adapter) Tenant() string  { return a.cfg.Tenant }
func (a *Adapter) Account() string { return a.cfg.Account }

// NewChannelMessageID returns "": Graph assigns message ids.
func (a *Adapter) NewChannelMessageID() string { return "" }

func (a *Adapter) key(name string) credstore.Key {
	return credstore.Key{Tenant: a.cfg.Tenant, Channel: string(gateway.Teams), Account: a.cfg.Account, Name: name}
}

// serviceUserID is the service account's AAD id: configured, or learnt from the login.
func (a *Adapter) serviceUserID() string {
	if a.cfg.ServiceUserID != "" {
		return a.cfg.ServiceUserID
	}
	return a.auth.Identity().UserID
}

// recentSet remembers a bounded number of keys, oldest forgotten first.
type recentSet struct {
	mu    sync.Mutex
	max   int
	order []string
	set   map[string]struct{}
}

func newRecentSet(max int) *recentSet { return &recentSet{max: max, set: map[string]struct{}{}} }

func (r *recentSet) has(k string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[k]
	return ok
}

func (r *recentSet) add(k string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[k]; ok {
		return
	}
	r.set[k] = struct{}{}
	r.order = append(r.order, k)
	if len(r.order) > r.max {
		delete(r.set, r.order[0])
		r.order = r.order[1:]
	}
}

// Ready reports whether the account can get a Graph token: a *ReauthRequiredError while it needs
// a new login (for /readyz and `switchboard teams accounts`).
func (a *Adapter) Ready(ctx context.Context) error {
	_, err := a.auth.Token(ctx)
	return err
}

// ForgetUser removes what the adapter keeps about a Teams user — the id of the 1:1 chat with
// them — for an erasure of that user.
func (a *Adapter) ForgetUser(ctx context.Context, aadUserID string) error {
	a.chatMu.Lock()
	defer a.chatMu.Unlock()
	m := a.userChats
	if m == nil {
		m = map[string]string{}
		b, err := a.store.Get(ctx, a.key(blobUserChats))
		if gateway.ErrorCode(err) == gateway.ENotFound {
			return nil
		}
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
	}
	if _, ok := m[aadUserID]; !ok {
		return nil
	}
	delete(m, aadUserID)
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := a.store.Put(ctx, a.key(blobUserChats), b); err != nil {
		return err
	}
	a.userChats = m
	return nil
}
