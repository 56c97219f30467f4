package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway/server"
)

func newServeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway",
		Long: `Run the gateway: the HTTP API, the pipeline and the channel adapters.

With --dev and no --config it runs on embedded defaults: an embedded NATS server and a SQLite
database under ./data, a generated master key, tenant "demo" with the WhatsApp account "sales" and
the Teams account "ops" on the sandbox driver, and an API key printed once.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load(cmd)
			if err != nil {
				return err
			}
			log, closeLog, err := newLogger(cfg.Log, g.stdout)
			if err != nil {
				return err
			}
			defer closeLog()
			drivers, routes := channelDrivers(log, g)
			srv, err := server.New(cmd.Context(), cfg, server.Options{
				Dev:           g.dev,
				Log:           log,
				Drivers:       drivers,
				ChannelRoutes: routes,
				Banner:        func(format string, args ...any) { fmt.Fprintf(g.stderr, format, args...) },
				ConfigFile:    g.configPath, // watched: automations reload on change and on SIGHUP
				ReloadSignal:  hangups(cmd.Context()),
				LookupEnv:     os.LookupEnv, // webhook actions' secret_env
			})
			if err != nil {
				return err
			}
			return srv.Run(cmd.Context())
		},
	}
}

// newLogger returns the process log: JSON lines (or console text) on stdout or in a file.
func newLogger(c config.LogConfig, stdout io.Writer) (zerolog.Logger, func(), error) {
	w, closeFn := stdout, func() {}
	if c.File != "" {
		if err := os.MkdirAll(filepath.Dir(c.File), 0o700); err != nil {
			return zerolog.Logger{}, nil, err
		}
		f, err := os.OpenFile(c.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return zerolog.Logger{}, nil, err
		}
		w, closeFn = f, func() { f.Close() }
	}
	if c.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil || c.Level == "" {
		level = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), closeFn, nil
}
