package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// startEmbedded starts a JetStream-enabled nats-server and waits until it is ready.
func startEmbedded(e *Embedded, log zerolog.Logger) (*server.Server, error) {
	if err := os.MkdirAll(e.StoreDir, 0o700); err != nil {
		return nil, gateway.WrapError(gateway.EInternal, err, "bus: create store dir")
	}
	opts := &server.Options{
		ServerName:      "switchboard",
		JetStream:       true,
		StoreDir:        e.StoreDir,
		SyncAlways:      e.SyncAlways,
		NoSigs:          true, // the host process owns signals
		DontListen:      e.Listen == "",
		JetStreamKey:    e.StoreKey,
		JetStreamCipher: server.AES,
		MaxPayload:      8 << 20,
	}
	if e.Listen != "" {
		host, port, err := net.SplitHostPort(e.Listen)
		if err != nil {
			return nil, gateway.WrapError(gateway.EInvalidField, err, "bus.embedded.listen %q", e.Listen)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, gateway.FieldErrorf(gateway.EInvalidField, "bus.embedded.listen", "bad port %q", port)
		}
		if p == 0 {
			p = server.RANDOM_PORT // nats-server reads 0 as its default port, 4222
		}
		opts.Host, opts.Port = host, p
		opts.Authorization = e.Token
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, gateway.WrapError(gateway.EInternal, err, "bus: configure embedded nats-server")
	}
	sl := &serverLog{log: log.With().Str("nats", "server").Logger()}
	srv.SetLoggerV2(sl, false, false, false)
	srv.Start() // returns once JetStream is recovered; listeners run in the background
	if err := sl.fatal(); err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, gateway.WrapError(gateway.EUnavailable, err, "bus: embedded nats-server")
	}
	wait := e.ReadyTimeout
	if wait <= 0 {
		wait = 30 * time.Second
	}
	if !srv.ReadyForConnections(wait) {
		srv.Shutdown()
		srv.WaitForShutdown()
		if err := sl.fatal(); err != nil {
			return nil, gateway.WrapError(gateway.EUnavailable, err, "bus: embedded nats-server")
		}
		return nil, gateway.Errorf(gateway.EUnavailable, "bus: embedded nats-server not ready after %s", wait)
	}
	if e.StoreKey == "" {
		log.Warn().Msg("embedded JetStream store is not encrypted: set a store key")
	}
	return srv, nil
}

// checkRecovered refuses to go on when the store holds a stream that the server did not load.
func (b *Bus) checkRecovered(ctx context.Context, stream string) error {
	dir := filepath.Join(b.cfg.Embedded.StoreDir, "jetstream", server.DEFAULT_GLOBAL_ACCOUNT, "streams", stream)
	if _, err := os.Stat(dir); err != nil {
		return nil // never created: fine
	}
	ctx, cancel := context.WithTimeout(ctx, defaultOpTimeout)
	defer cancel()
	_, err := b.js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return gateway.Errorf(gateway.EUnavailable,
			"bus: stream %s exists in %s but could not be loaded: wrong store key, or a damaged store (see the nats-server errors logged above)",
			stream, b.cfg.Embedded.StoreDir)
	}
	if err != nil {
		return gateway.WrapError(gateway.EUnavailable, err, "bus: stream %s", stream)
	}
	return nil
}

// serverLog adapts nats-server's logger to zerolog. Notices are debug: the server is chatty at
// start. Fatalf must not exit the process: it records the error for startEmbedded.
type serverLog struct {
	log zerolog.Logger

	mu       sync.Mutex
	fatalErr error
}

func (l *serverLog) fatal() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatalErr
}

func (l *serverLog) Noticef(format string, v ...any) { l.log.Debug().Msgf(format, v...) }
func (l *serverLog) Warnf(format string, v ...any)   { l.log.Warn().Msgf(format, v...) }
func (l *serverLog) Errorf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l *serverLog) Debugf(format string, v ...any)  { l.log.Debug().Msgf(format, v...) }
func (l *serverLog) Tracef(format string, v ...any)  { l.log.Trace().Msgf(format, v...) }
func (l *serverLog) Fatalf(format string, v ...any) {
	err := fmt.Errorf(format, v...)
	l.log.Error().Err(err).Msg("nats-server fatal")
	l.mu.Lock()
	if l.fatalErr == nil {
		l.fatalErr = err
	}
	l.mu.Unlock()
}
