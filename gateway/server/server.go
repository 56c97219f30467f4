// Package server is Switchboard's composition root: it turns a config.Config into a running
// gateway — keyring, store, bus, pipeline, adapters and the HTTP API — and shuts it down in the
// order that loses nothing.
package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/adapters/sandbox"
	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/gateway/metrics"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/pipeline/automation"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
	"github.com/switchboard-gateway/switchboard/pipeline/privacy"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
)

// DriverFactory builds the adapter of one account for a driver other than the sandbox. The
// command registers the WhatsApp and Teams drivers, so that this package (and its tests) link
// neither whatsmeow nor the Graph SDK.
type DriverFactory func(ctx context.Context, env DriverEnv) (adapters.Adapter, error)

// DriverEnv is what a driver gets to build an account's adapter.
type DriverEnv struct {
	Tenant  string
	Channel gateway.Channel
	Account config.AccountConfig
	Config  *config.Config
	Keyring *crypt.Keyring
	DB      *storesql.DB
	Log     zerolog.Logger
}

// Options are the parts of a run that are not configuration.
type Options struct {
	// Dev enables development mode: a generated master key on first start, tenant keys created
	// and written to the data dir, the embedded bus reachable by the CLI on loopback, and the
	// sandbox inbound route.
	Dev bool
	// Log is the process log; the delivery-status log lines go to it too.
	Log zerolog.Logger
	// Drivers maps a driver name (whatsmeow, graph) to its factory.
	Drivers map[string]DriverFactory
	// ChannelRoutes are the drivers' own webhooks (Graph change notifications), served without an
	// API key because they authenticate themselves.
	ChannelRoutes map[string]http.Handler
	// OnApplied sees every batch of recorded status events, after it is durable (tests, and the
	// seam for live events).
	OnApplied func(ctx context.Context, applied []store.Applied)
	// OnErasure sees every erasure job that finished (tests).
	OnErasure func(store.Erasure)
	// OnSweep sees every retention sweep's report per tenant (tests).
	OnSweep func(tenant string, r privacy.SweepReport)
	// Banner receives the few human lines printed at start (the dev API key); nil for none.
	Banner func(format string, args ...any)
	// ConfigFile, when set, is watched: a valid change swaps the automations in (an invalid one
	// is refused and logged). ReloadSignal (SIGHUP) reloads it at once. OnReload sees each attempt.
	ConfigFile   string
	ReloadSignal <-chan struct{}
	OnReload     func(automation.ReloadResult)
	// OnAutomation sees the outcome of every automation action (tests, metrics).
	OnAutomation func(automation.Outcome)
	// LookupEnv reads the environment variables automations name (a webhook's secret_env); nil
	// reads none, and such webhooks are refused.
	LookupEnv func(name string) (string, bool)
	// SandboxLinkStep is how long each step of a sandbox account's simulated link shows
	// (tests); zero for the sandbox's default.
	SandboxLinkStep time.Duration
	// WebhookResolver resolves the hosts of webhooks created by API (tests); nil for the system's.
	WebhookResolver delivery.Resolver
}

// Server is a running gateway.
type Server struct {
	cfg  *config.Config
	opts Options
	log  zerolog.Logger

	keyring *crypt.Keyring
	db      *storesql.DB
	bus     *bus.Bus

	intake    *pipeline.Intake
	resumer   *pipeline.Resumer
	router    *pipeline.Router
	recorder  *pipeline.Recorder
	inbound   *pipeline.InboundRecorder
	runners   []*adapters.Runner
	sandboxes map[accountKey]*sandbox.Adapter
	metrics   *metrics.Metrics
	webhooks  *delivery.Dispatcher // configured and API-created endpoints
	privacy   *privacy.Service
	sweeper   *privacy.Sweeper

	// adapters holds every account's adapter (GET /v1/accounts, linking); runnerKeys[i] is the
	// account of runners[i].
	adapters   map[accountKey]adapters.Adapter
	runnerKeys []accountKey

	automations *automation.Engine
	reloader    *automation.Reloader
	scheduler   *automation.Scheduler

	// endStreams ends the open event streams (GET /v1/events) when the HTTP server shuts down.
	endStreams func()

	handler  http.Handler
	api      *api.Server // inside handler, beside the dashboard
	listener net.Listener
}

type accountKey struct {
	tenant  string
	channel gateway.Channel
	account string
}

// New opens everything the gateway needs and wires it, but starts no work: Run does.
// On error, whatever was opened is closed again.
func New(ctx context.Context, cfg *config.Config, opts Options) (s *Server, err error) {
	s = &Server{cfg: cfg, opts: opts, log: opts.Log, sandboxes: map[accountKey]*sandbox.Adapter{}}
	opened := s // the returns below set s to nil
	defer func() {
		if err != nil {
			opened.close(context.Background())
		}
	}()
	if s.db, s.keyring, err = OpenStore(ctx, cfg, opts.Dev, s.log); err != nil {
		return nil, err
	}
	if s.bus, err = s.openBus(ctx); err != nil {
		return nil, err
	}
	for _, t := range cfg.Tenants {
		if err := s.db.EnsureTenant(ctx, t.ID); err != nil {
			return nil, err
		}
	}
	if err := s.wire(ctx); err != nil {
		return nil, err
	}
	if err := s.listen(); err != nil {
		return nil, err
	}
	if opts.Dev {
		if err := s.devAPIKeys(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// OpenStore opens the configured store with its keyring: what the server runs on, and what
// CLI commands that read or write encrypted data (teams login, consent import …) open too.
func OpenStore(ctx context.Context, cfg *config.Config, dev bool, log zerolog.Logger) (*storesql.DB, *crypt.Keyring, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("creating the data dir %s: %w", cfg.DataDir, err)
	}
	masters, err := masterKeys(cfg, dev, log)
	if err != nil {
		return nil, nil, err
	}
	db, err := storesql.Open(ctx, storesql.Config{
		Driver: cfg.Store.Driver, DSN: cfg.Store.DSN, BatchSize: cfg.Store.BatchSize, BatchWait: cfg.Store.BatchWait,
		KeysDSN: cfg.Store.KeysDSN,
	}, log)
	if err != nil {
		return nil, nil, err
	}
	kr, err := crypt.New(masters, db)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	db.SetKeyring(kr)
	return db, kr, nil
}

// masterKeys reads the master keys: SWITCHBOARD_MASTER_KEYS wins over the file. In dev mode a
// missing file is generated; otherwise there is no start without keys.
func masterKeys(cfg *config.Config, dev bool, log zerolog.Logger) ([]crypt.MasterKey, error) {
	if env := string(cfg.Security.MasterKeys); env != "" {
		keys, err := crypt.ParseMasterKeys(env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", config.EnvMasterKeys, err)
		}
		return keys, nil
	}
	path := cfg.Security.MasterKeysFile
	if path == "" {
		if !dev {
			return nil, gateway.Errorf(gateway.EMissingField,
				"no master keys: set security.master_keys_file or %s (create a key file with `switchboard keys master --out FILE`); refusing to store data unencrypted",
				config.EnvMasterKeys)
		}
		path = filepath.Join(cfg.DataDir, "master.keys")
	}
	keys, err := crypt.LoadMasterKeys(path)
	if err == nil || !dev || !errors.Is(err, os.ErrNotExist) {
		if err != nil {
			return nil, fmt.Errorf("master keys: %w", err)
		}
		return keys, nil
	}
	k, err := crypt.GenerateMasterKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("generating a dev master key: %w", err)
	}
	log.Warn().Str("file", path).Str("key_id", k.ID).
		Msg("DEV MODE: generated a master key file next to the data it protects. Never do this in production: keep master keys in a secret store and pass them with SWITCHBOARD_MASTER_KEYS")
	return []crypt.MasterKey{k}, nil
}

// openBus starts or connects to NATS. The embedded JetStream store is encrypted with a key
// derived from a master key whose id is pinned beside the store, so that promoting a new primary
// master key does not lock the gateway out of its own streams.
func (s *Server) openBus(ctx context.Context) (*bus.Bus, error) {
	bc := bus.Config{
		URLs:            s.cfg.Bus.URLs,
		CredsFile:       s.cfg.Bus.CredsFile,
		DuplicateWindow: s.cfg.Bus.DuplicateWindow,
		StatusMaxAge:    s.cfg.Bus.StatusMaxAge,
		InboundMaxAge:   s.cfg.Bus.InboundMaxAge,
	}
	var urlFile string
	if e := s.cfg.Bus.Embedded; e != nil {
		if err := os.MkdirAll(e.StoreDir, 0o700); err != nil {
			return nil, err
		}
		key, err := s.storeKey(e.StoreDir)
		if err != nil {
			return nil, err
		}
		bc.Embedded = &bus.Embedded{StoreDir: e.StoreDir, Listen: e.Listen, StoreKey: key}
		if bc.Embedded.Listen == "" && s.opts.Dev {
			// The CLI (logs -f, deadletters) reaches the dev server's bus on loopback.
			bc.Embedded.Listen = "127.0.0.1:0"
		}
		if bc.Embedded.Listen != "" {
			bc.Embedded.Token = randomToken()
			urlFile = filepath.Join(s.cfg.DataDir, "nats.url")
		}
	}
	b, err := bus.Open(ctx, bc, s.log)
	if err != nil {
		return nil, err
	}
	if urlFile != "" {
		u := strings.Replace(b.ClientURL(), "nats://", "nats://"+bc.Embedded.Token+"@", 1)
		if err := writeSecretFile(urlFile, u+"\n"); err != nil {
			b.Close(ctx)
			return nil, err
		}
	}
	return b, nil
}

func (s *Server) storeKey(storeDir string) (string, error) {
	pin := filepath.Join(storeDir, "master-key-id")
	id := s.keyring.PrimaryKeyID()
	if b, err := os.ReadFile(pin); err == nil {
		id = strings.TrimSpace(string(b))
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	} else if err := writeSecretFile(pin, id+"\n"); err != nil {
		return "", err
	}
	key, err := s.keyring.DeriveKeyFrom(id, "nats-jetstream-store")
	if err != nil {
		return "", fmt.Errorf("the bus store is encrypted under master key %s, which is not configured: %w", id, err)
	}
	return base64.RawStdEncoding.EncodeToString(key), nil
}

func (s *Server) listen() error {
	ln, err := net.Listen("tcp", s.cfg.Server.Listen)
	if err != nil {
		return gateway.WrapError(gateway.EUnavailable, err, "cannot listen on %s (server.listen, SWITCHBOARD_SERVER_LISTEN)", s.cfg.Server.Listen)
	}
	s.listener = ln
	return nil
}

// Addr is the address the HTTP API listens on.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// Run serves until ctx is done, then shuts down: the HTTP API stops taking requests and finishes
// those in flight, the consumers stop fetching and finish (and ack) what they hold, the sandbox
// and channel adapters stop, and the bus and the store are closed last, flushing their writes.
func (s *Server) Run(ctx context.Context) error {
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()

	var wg sync.WaitGroup
	errc := make(chan error, 16+len(s.runners))
	start := func(name string, run func(context.Context) error) {
		wg.Go(func() {
			if err := run(work); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}
	start("intake", s.intake.Run)
	start("router", s.router.Run)
	start("recorder", s.recorder.Run)
	start("inbound", s.inbound.Run)
	start("resumer", s.resumer.Run)
	if s.webhooks != nil {
		start("webhooks", s.webhooks.Run)
	}
	start("privacy", s.privacy.Run)
	start("retention", s.sweeper.Run)
	start("media", s.sweepMedia)
	if s.reloader != nil {
		start("reloader", s.reloader.Run)
	}
	start("scheduler", s.scheduler.Run)
	start("automation-status", s.runAutomationStatus)
	for _, r := range s.runners {
		start("runner", r.Run)
	}

	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          nil,
	}
	srv.RegisterOnShutdown(s.endStreams)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(s.listener) }()
	s.log.Info().Str("listen", s.Addr()).Bool("dev", s.opts.Dev).Msg("switchboard ready")

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = err
	case err := <-errc:
		runErr = err
	}
	s.log.Info().Msg("shutting down: draining in-flight work")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		s.log.Warn().Err(err).Msg("http shutdown")
	}
	stopWork()
	wg.Wait()
	s.close(shutdownCtx)
	s.log.Info().Msg("stopped")
	return runErr
}

func (s *Server) close(ctx context.Context) {
	if s.listener != nil {
		s.listener.Close()
	}
	for _, sb := range s.sandboxes {
		if err := sb.Close(); err != nil {
			s.log.Warn().Err(err).Msg("closing a sandbox ledger")
		}
	}
	if s.bus != nil {
		if err := s.bus.Close(ctx); err != nil {
			s.log.Warn().Err(err).Msg("closing the bus")
		}
	}
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			s.log.Warn().Err(err).Msg("closing the store")
		}
	}
}
