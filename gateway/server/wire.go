package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"github.com/rs/zerolog"
	"os"
	"path/filepath"
	"strings"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/adapters/sandbox"
	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
	"github.com/switchboard-gateway/switchboard/pipeline"
)

// wire builds the pipeline, one runner per configured account, and the HTTP API.
func (s *Server) wire(ctx context.Context) error {
	cfg := s.cfg
	logFor := func(component string) zerolog.Logger { return s.log.With().Str("component", component).Logger() }
	var err error
	s.metrics = s.newMetrics()
	if err := s.wirePrivacy(logFor("privacy")); err != nil {
		return err
	}

	if s.resumer, err = pipeline.NewResumer(pipeline.ResumerConfig{Store: s.db, Bus: s.bus, Log: logFor("resumer")}); err != nil {
		return err
	}
	consentRegistry := s.consentRegistry()
	if s.intake, err = pipeline.NewIntake(pipeline.IntakeConfig{
		Store: s.db, Bus: s.bus, Background: s.bus, Retry: s.resumer.Retry, Indexer: s.keyring, Log: logFor("intake"),
		Replays: s.db, Stages: []pipeline.Stage{s.consentStage("intake")},
	}); err != nil {
		return err
	}
	dir := directory{cfg}
	if s.router, err = pipeline.NewRouter(pipeline.RouterConfig{
		Bus: s.bus, Stages: []pipeline.Stage{pipeline.RouteStage{Known: dir.HasAccount}}, MaxDeliver: cfg.Bus.MaxDeliver, AckWait: cfg.Bus.AckWait, Log: logFor("router"),
	}); err != nil {
		return err
	}
	if s.recorder, err = pipeline.NewRecorder(pipeline.RecorderConfig{
		Store: s.db, Bus: s.bus, Log: s.log, MaxDeliver: cfg.Bus.MaxDeliver, OnApplied: s.onApplied,
	}); err != nil {
		return err
	}
	automations, err := s.automationHandler()
	if err != nil {
		return err
	}
	if s.inbound, err = pipeline.NewInboundRecorder(pipeline.InboundRecorderConfig{
		Store: s.db, Bus: s.bus, Sealer: s.keyring, Log: logFor("inbound"), MaxDeliver: cfg.Bus.MaxDeliver,
		Handlers: []pipeline.InboundHandler{s.keywordHandler(consentRegistry), s.privacy.SkipRestricted(automations)},
	}); err != nil {
		return err
	}

	for _, t := range cfg.Tenants {
		for _, ch := range gateway.Channels {
			cc := t.Channel(ch)
			if cc == nil {
				continue
			}
			for _, acct := range cc.Accounts {
				if err := s.addAccount(ctx, t.ID, ch, acct); err != nil {
					return fmt.Errorf("tenant %s, %s account %s: %w", t.ID, ch, acct.Name, err)
				}
			}
		}
	}

	d, webhooks, err := s.newWebhooks()
	if err != nil {
		return err
	}
	s.webhooks = d

	deps := api.Deps{
		Intake:    countingIntake{s.intake, s.metrics},
		Messages:  s.db,
		Keys:      s.db,
		Directory: dir,
		Consent:   consentRegistry,
		Privacy:   s.privacy,
		Media:     s.db,
		Audit:     s.privacy,
		Channel:   s.opts.ChannelRoutes,
		Events:    s.eventSource(),
		Metrics:   s.metrics.Handler(),
		Hooks:     s.automations,
		Webhooks:  webhookAPI{webhooks},
		Ready: []api.ReadyCheck{
			{Name: "store", Check: s.db.Ping},
			{Name: "bus", Check: s.bus.Ready},
		},
	}
	accts := s.newAccounts()
	deps.Accounts, deps.Linker = accts, accts
	for i, r := range s.runners {
		if r.Gated() { // an account that can be paused (WhatsApp): ready while it can send
			deps.Ready = append(deps.Ready, api.ReadyCheck{Name: r.Name(), Check: r.Ready, State: accts.stateOf(s.runnerKeys[i])})
		}
	}
	if s.opts.Dev && len(s.sandboxes) > 0 {
		deps.Sandbox = sandboxes(s.sandboxes)
	}
	s.api = api.New(api.Config{
		MaxBody:       int64(cfg.Server.MaxBody),
		Timeout:       cfg.Server.RequestTimeout,
		RatePerSecond: cfg.Server.RateLimit.RequestsPerSecond,
		Burst:         cfg.Server.RateLimit.Burst,
		Log:           logFor("api"),
	}, deps)
	s.handler = withDashboard(s.api, cfg.Server.PublicURL, logFor("dashboard"))
	return nil
}

func (s *Server) addAccount(ctx context.Context, tenant string, ch gateway.Channel, acct config.AccountConfig) error {
	log := s.log.With().Str("component", "adapter").Str("tenant", tenant).Str("channel", string(ch)).Str("account", acct.Name).Logger()
	var ad adapters.Adapter
	switch acct.Driver {
	case config.DriverSandbox:
		sc := acct.Sandbox
		replies := make([]sandbox.Reply, len(sc.Replies))
		for i, r := range sc.Replies {
			replies[i] = sandbox.Reply{Match: r.Match, Text: r.Text}
		}
		sb, err := sandbox.New(sandbox.Config{
			Channel: ch, Account: acct.Name, Dir: filepath.Join(s.cfg.DataDir, "sandbox", tenant),
			DeliveredAfter: sc.DeliveredAfter, ReadAfter: max(sc.ReadAfter-sc.DeliveredAfter, 0), // config counts from the send, the sandbox from delivery
			Fail: sc.Fail, FailCode: sc.FailCode, Replies: replies, Log: log,
			LinkStep: s.opts.SandboxLinkStep,
		})
		if err != nil {
			return err
		}
		s.sandboxes[accountKey{tenant, ch, acct.Name}] = sb
		ad = sb
	default:
		factory := s.opts.Drivers[acct.Driver]
		if factory == nil {
			return gateway.Errorf(gateway.EInvalidField, "driver %q is not available in this build", acct.Driver)
		}
		var err error
		if ad, err = factory(ctx, DriverEnv{Tenant: tenant, Channel: ch, Account: acct, Config: s.cfg, Keyring: s.keyring, DB: s.db, Log: log}); err != nil {
			return err
		}
	}
	var lease adapters.Leaser
	if acct.Driver == config.DriverWhatsMeow {
		lease = s.bus.Leases(0, "") // one live connection per WhatsApp account: one replica holds it
	}
	r, err := adapters.NewRunner(adapters.RunnerConfig{
		Tenant: tenant, Channel: ch, Account: acct.Name, Adapter: ad,
		Store: s.db, Media: s.db, Bus: s.bus, Sealer: s.keyring, Stages: []pipeline.Stage{s.consentStage("runner")},
		MaxDeliver: s.cfg.Bus.MaxDeliver, AckWait: s.cfg.Bus.AckWait, Log: log, Lease: lease,
		OnState: s.accountStateEvents(tenant, ch, acct.Name, log),
	})
	if err != nil {
		return err
	}
	s.runners = append(s.runners, r)
	key := accountKey{tenant, ch, acct.Name}
	s.runnerKeys = append(s.runnerKeys, key)
	if s.adapters == nil {
		s.adapters = map[accountKey]adapters.Adapter{}
	}
	s.adapters[key] = ad
	return nil
}

// directory answers the API's questions about configured accounts.
type directory struct{ cfg *config.Config }

func (d directory) channel(tenant string, ch gateway.Channel) *config.ChannelConfig {
	t := d.cfg.Tenant(tenant)
	if t == nil {
		return nil
	}
	return t.Channel(ch)
}

func (d directory) HasAccount(tenant string, ch gateway.Channel, account string) bool {
	return d.channel(tenant, ch).Account(account) != nil
}

func (d directory) DefaultAccount(tenant string, ch gateway.Channel) (string, bool) {
	c := d.channel(tenant, ch)
	if c == nil || len(c.Accounts) == 0 {
		return "", false
	}
	return c.Accounts[0].Name, true
}

// sandboxes lets the dev-mode API inject inbound messages into sandbox accounts.
type sandboxes map[accountKey]*sandbox.Adapter

func (m sandboxes) Inject(ctx context.Context, tenant string, ch gateway.Channel, account, from, text string) (string, error) {
	sb := m[accountKey{tenant, ch, account}]
	if sb == nil {
		return "", gateway.FieldErrorf(gateway.EUnknownAccount, "account", "%s account %q is not on the sandbox driver", ch, account)
	}
	return sb.Inject(ctx, from, text)
}

// devAPIKeys gives every tenant an API key in dev mode, written to <data>/<tenant>.apikey (0600)
// and printed once; a key file that still matches a stored key is reused.
func (s *Server) devAPIKeys(ctx context.Context) error {
	for _, t := range s.cfg.Tenants {
		path := filepath.Join(s.cfg.DataDir, t.ID+".apikey")
		if b, err := os.ReadFile(path); err == nil {
			if k, err := s.db.APIKeyBySecret(ctx, strings.TrimSpace(string(b))); err == nil && k.Tenant == t.ID {
				continue
			}
		}
		secret := api.NewAPIKeySecret()
		if _, err := s.db.CreateAPIKey(ctx, t.ID, "dev", secret); err != nil {
			return err
		}
		if err := writeSecretFile(path, secret+"\n"); err != nil {
			return err
		}
		if s.opts.Banner != nil {
			s.opts.Banner("API key for tenant %s (shown once; also in %s):\n\n    %s\n", t.ID, path, secret)
		}
	}
	return nil
}

// writeSecretFile writes data to path with mode 0600, replacing it atomically.
func writeSecretFile(path, data string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func randomToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}
