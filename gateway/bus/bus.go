// Package bus is Switchboard's NATS JetStream layer (DESIGN.md §2, §3.7): an embedded nats-server
// or external NATS URLs, the SEND, DISPATCH, STATUS, INBOUND and DEADLETTER streams, publishing
// with Nats-Msg-Id, durable pull consumers with a bounded worker pool, dead letters that an
// operator can list and replay, and ordered followers for `switchboard logs -f`.
//
// Delivery is at least once. A handler's message is acknowledged only after the handler returned
// nil, so its effect is durable before the bus forgets the message; a crash at any point means a
// redelivery, never a loss. Handlers must therefore be idempotent.
package bus

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Defaults for the zero values of Config and ConsumerConfig.
const (
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultStatusMaxAge    = 7 * 24 * time.Hour
	DefaultInboundMaxAge   = 7 * 24 * time.Hour
	DefaultAckWait         = 30 * time.Second
	DefaultMaxDeliver      = 5
	DefaultBatch           = 100

	defaultOpTimeout = 10 * time.Second // stream/consumer management, acks, dead letters
)

// DefaultBackOff is the nak delay schedule when ConsumerConfig.BackOff is empty: delivery n that
// fails waits DefaultBackOff[n-1] (the last entry repeats) before the next attempt.
func DefaultBackOff() []time.Duration {
	return []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute}
}

// Embedded configures the in-process nats-server.
type Embedded struct {
	// StoreDir holds the JetStream file store (the server adds a "jetstream" directory). Required.
	StoreDir string
	// Listen, when set ("127.0.0.1:4222"), opens a client port for other processes (the CLI,
	// replicas); Token is then required. Empty: no TCP listener at all, only the in-process
	// connection.
	Listen string
	// Token authenticates clients when Listen is set (the in-process connection uses it too).
	Token string
	// StoreKey encrypts the JetStream store (messages, stream and consumer metadata) with AES-GCM.
	// Empty leaves the store in plaintext (a warning is logged). Changing it makes existing data
	// unreadable: Open then fails rather than start on an empty store.
	StoreKey string
	// SyncAlways fsyncs every write. Off, the server fsyncs every two minutes: a killed process
	// loses nothing (writes are in the OS), a power loss can lose the last interval.
	SyncAlways bool
	// ReadyTimeout bounds the server's start (JetStream recovery included). Default 30s.
	ReadyTimeout time.Duration
}

// Config selects the NATS deployment and the stream limits.
type Config struct {
	// Embedded runs a nats-server inside this process. Exactly one of Embedded and URLs is set.
	Embedded *Embedded
	// URLs of an external NATS cluster ("nats://n1:4222"), with an optional credentials file.
	URLs      []string
	CredsFile string
	// Replicas of each stream on an external cluster (default 1; the embedded server is always 1).
	Replicas int
	// Name of the client connection, as the server's monitoring shows it. Default "switchboard".
	Name string

	// DuplicateWindow is how long a Nats-Msg-Id is remembered (default 2m).
	DuplicateWindow time.Duration
	// StatusMaxAge and InboundMaxAge bound the limits streams (default 7 days each).
	StatusMaxAge  time.Duration
	InboundMaxAge time.Duration
	// DeadLetterMaxAge bounds the dead letters (0 = keep until replayed or deleted).
	DeadLetterMaxAge time.Duration

	// UseExisting attaches to streams that must already exist, without creating or updating
	// them: for clients such as the CLI, whose idea of the limits above may differ from the
	// server's (an update would overwrite the server's MaxAge).
	UseExisting bool
}

// Bus is a connection to JetStream with Switchboard's streams in place. It is safe for concurrent
// use. Close it after every Consume, ConsumeBatch and Follow has returned.
type Bus struct {
	cfg Config
	log zerolog.Logger
	srv *server.Server // nil for external NATS
	nc  *nats.Conn
	js  jetstream.JetStream

	closed    chan struct{} // closed by the connection's ClosedHandler
	closeOnce sync.Once
	closeErr  error
}

// Open connects to NATS (starting the embedded server first, if configured) and creates or
// updates the streams. On error nothing is left running.
func Open(ctx context.Context, cfg Config, log zerolog.Logger) (*Bus, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	b := &Bus{cfg: cfg, log: log.With().Str("component", "bus").Logger(), closed: make(chan struct{})}

	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.ClosedHandler(func(*nats.Conn) { close(b.closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := b.log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
		nats.DrainTimeout(30 * time.Second),
	}
	var url string
	if e := cfg.Embedded; e != nil {
		srv, err := startEmbedded(e, b.log)
		if err != nil {
			return nil, err
		}
		b.srv = srv
		opts = append(opts, nats.InProcessServer(srv), nats.NoReconnect())
		if e.Token != "" {
			opts = append(opts, nats.Token(e.Token))
		}
	} else {
		url = strings.Join(cfg.URLs, ",")
		opts = append(opts,
			nats.MaxReconnects(-1),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				b.log.Warn().Err(err).Msg("nats disconnected")
			}),
			nats.ReconnectHandler(func(nc *nats.Conn) {
				b.log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("nats reconnected")
			}))
		if cfg.CredsFile != "" {
			opts = append(opts, nats.UserCredentials(cfg.CredsFile))
		}
	}

	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.shutdownServer()
		return nil, gateway.WrapError(gateway.EUnavailable, err, "bus: connect to NATS")
	}
	b.nc = nc
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		nc.Close()
		b.shutdownServer()
		return nil, gateway.WrapError(gateway.EInternal, err, "bus: jetstream")
	}
	b.js = js

	if err := b.ensureStreams(ctx); err != nil {
		nc.Close()
		b.shutdownServer()
		return nil, err
	}
	b.log.Info().Bool("embedded", b.srv != nil).Msg("bus ready")
	return b, nil
}

func withDefaults(cfg Config) (Config, error) {
	switch {
	case cfg.Embedded != nil && len(cfg.URLs) > 0:
		return cfg, gateway.FieldErrorf(gateway.EInvalidField, "bus", "set either embedded or urls, not both")
	case cfg.Embedded == nil && len(cfg.URLs) == 0:
		return cfg, gateway.FieldErrorf(gateway.EMissingField, "bus", "set embedded.store_dir or urls")
	}
	if e := cfg.Embedded; e != nil {
		if e.StoreDir == "" {
			return cfg, gateway.FieldErrorf(gateway.EMissingField, "bus.embedded.store_dir", "required")
		}
		if e.Listen != "" && e.Token == "" {
			return cfg, gateway.FieldErrorf(gateway.EMissingField, "bus.embedded.token",
				"required when bus.embedded.listen opens a client port")
		}
		if cfg.CredsFile != "" {
			return cfg, gateway.FieldErrorf(gateway.EInvalidField, "bus.creds", "only for external urls")
		}
	}
	if cfg.Replicas <= 0 || cfg.Embedded != nil {
		cfg.Replicas = 1
	}
	if cfg.Name == "" {
		cfg.Name = "switchboard"
	}
	if cfg.DuplicateWindow <= 0 {
		cfg.DuplicateWindow = DefaultDuplicateWindow
	}
	if cfg.StatusMaxAge <= 0 {
		cfg.StatusMaxAge = DefaultStatusMaxAge
	}
	if cfg.InboundMaxAge <= 0 {
		cfg.InboundMaxAge = DefaultInboundMaxAge
	}
	if cfg.DeadLetterMaxAge < 0 {
		cfg.DeadLetterMaxAge = 0
	}
	return cfg, nil
}

// streamConfigs returns the six streams. The duplicate window may not exceed a stream's MaxAge.
func (b *Bus) streamConfigs() []jetstream.StreamConfig {
	dup := func(maxAge time.Duration) time.Duration {
		if maxAge > 0 && maxAge < b.cfg.DuplicateWindow {
			return maxAge
		}
		return b.cfg.DuplicateWindow
	}
	base := func(name, prefix, desc string, ret jetstream.RetentionPolicy, maxAge time.Duration) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{prefix + ".>"},
			Retention:   ret,
			MaxAge:      maxAge,
			Storage:     jetstream.FileStorage,
			Replicas:    b.cfg.Replicas,
			Duplicates:  dup(maxAge),
			Discard:     jetstream.DiscardOld,
			AllowDirect: true,
		}
	}
	return []jetstream.StreamConfig{
		base(StreamSend, prefixSend, "accepted messages waiting for the pipeline", jetstream.WorkQueuePolicy, 0),
		base(StreamDispatch, prefixDispatch, "routed messages waiting for their channel account", jetstream.WorkQueuePolicy, 0),
		base(StreamStatus, prefixStatus, "status events", jetstream.LimitsPolicy, b.cfg.StatusMaxAge),
		base(StreamInbound, prefixInbound, "inbound messages (sealed)", jetstream.LimitsPolicy, b.cfg.InboundMaxAge),
		base(StreamDeadLetter, prefixDead, "messages whose handler gave up; list and replay them", jetstream.LimitsPolicy, b.cfg.DeadLetterMaxAge),
		base(StreamEvents, prefixEvents, "tenant events: consent changes, account states, disabled webhooks", jetstream.LimitsPolicy, b.cfg.StatusMaxAge),
	}
}

func (b *Bus) ensureStreams(ctx context.Context) error {
	for _, sc := range b.streamConfigs() {
		if b.cfg.UseExisting {
			opCtx, cancel := context.WithTimeout(ctx, defaultOpTimeout)
			_, err := b.js.Stream(opCtx, sc.Name)
			cancel()
			if err != nil {
				return notFoundOr(err, "bus: stream %s (is the gateway running against this NATS?)", sc.Name)
			}
			continue
		}
		if b.srv != nil {
			// A stream directory the server did not load means it could not read it: almost always
			// a changed StoreKey. Creating the stream afresh would discard its messages.
			if err := b.checkRecovered(ctx, sc.Name); err != nil {
				return err
			}
		}
		opCtx, cancel := context.WithTimeout(ctx, defaultOpTimeout)
		_, err := b.js.CreateOrUpdateStream(opCtx, sc)
		cancel()
		if err != nil {
			return gateway.WrapError(gateway.EUnavailable, err, "bus: create or update stream %s", sc.Name)
		}
	}
	return nil
}

// Close drains the connection (flushing pending acks and publishes) and stops the embedded
// server, waiting for it. Cancel every consumer first. Close is idempotent.
func (b *Bus) Close(ctx context.Context) error {
	b.closeOnce.Do(func() {
		if err := b.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			b.nc.Close()
		}
		select {
		case <-b.closed:
		case <-ctx.Done():
			b.nc.Close()
			b.closeErr = gateway.WrapError(gateway.ETimeout, ctx.Err(), "bus: drain")
		}
		b.shutdownServer()
		b.log.Info().Msg("bus closed")
	})
	return b.closeErr
}

func (b *Bus) shutdownServer() {
	if b.srv == nil {
		return
	}
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
}

// Ready reports whether the connection is up and JetStream answers.
func (b *Bus) Ready(ctx context.Context) error {
	if st := b.nc.Status(); st != nats.CONNECTED {
		return gateway.Errorf(gateway.EUnavailable, "bus: connection %s", st)
	}
	ctx, cancel := context.WithTimeout(ctx, defaultOpTimeout)
	defer cancel()
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return gateway.WrapError(gateway.EUnavailable, err, "bus: jetstream account info")
	}
	return nil
}

// Backlog is the work a durable consumer has not finished: messages not yet delivered plus
// messages delivered and not yet acknowledged.
func (b *Bus) Backlog(ctx context.Context, stream, durable string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, defaultOpTimeout)
	defer cancel()
	c, err := b.js.Consumer(ctx, stream, durable)
	if err != nil {
		return 0, notFoundOr(err, "bus: consumer %s on %s", durable, stream)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, notFoundOr(err, "bus: consumer %s on %s", durable, stream)
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// DeleteConsumer removes a durable consumer and its progress (an account removed from the
// configuration): on a work queue, a consumer whose filter overlaps another's cannot be created
// while the old one exists.
func (b *Bus) DeleteConsumer(ctx context.Context, stream, durable string) error {
	ctx, cancel := context.WithTimeout(ctx, defaultOpTimeout)
	defer cancel()
	if err := b.js.DeleteConsumer(ctx, stream, durable); err != nil {
		return notFoundOr(err, "bus: delete consumer %s on %s", durable, stream)
	}
	return nil
}

// ClientURL is the embedded server's client address when it listens ("nats://127.0.0.1:4222"),
// or "" when it does not (or the bus uses external NATS).
func (b *Bus) ClientURL() string {
	if b.srv == nil || b.cfg.Embedded.Listen == "" {
		return ""
	}
	return b.srv.ClientURL()
}

// Conn exposes the underlying connection for what the bus does not wrap (KV leases, raw
// benchmarks). Do not close it.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream exposes the JetStream context, for the same reasons as Conn.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

func notFoundOr(err error, format string, args ...any) error {
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, jetstream.ErrMsgNotFound) {
		return gateway.WrapError(gateway.ENotFound, err, format, args...)
	}
	return gateway.WrapError(gateway.EUnavailable, err, format, args...)
}

// opContext bounds a bus operation that must finish even when the caller's context is canceled
// (acks and dead letters during a drain).
func opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), defaultOpTimeout)
}
