package automation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/config"
)

// ReloadResult is the outcome of one reload.
type ReloadResult struct {
	Path     string
	Applied  bool            // the new rules are in force
	Problems config.Problems // why the file was refused (Applied false); nil for a read error
	Err      error           // the error when Applied is false
}

// ReloaderConfig wires a Reloader.
type ReloaderConfig struct {
	Path   string  // the config file; required
	Engine *Engine // required
	// Load reads and checks the file; default config.Load(path, nil) (the file and the
	// environment: what the flags set is not part of the automations).
	Load func(path string) (*config.Config, error)
	// Interval is how often the file is looked at; default 500ms.
	Interval time.Duration
	// Signal, when set, asks for a reload at once (SIGHUP).
	Signal <-chan struct{}
	// OnReload sees every reload attempt after it is done (tests, metrics).
	OnReload func(ReloadResult)
	Log      zerolog.Logger
}

// Reloader watches the config file and swaps the engine's rules when it changes and is valid. An
// invalid file is refused: its problems are logged and the rules in force stay. Only the
// automations are taken from a reloaded file; other settings need a restart.
type Reloader struct {
	cfg  ReloaderConfig
	last [sha256.Size]byte
	seen bool
}

// NewReloader returns a Reloader. The file as it is now counts as loaded.
func NewReloader(cfg ReloaderConfig) (*Reloader, error) {
	if cfg.Path == "" || cfg.Engine == nil {
		return nil, errors.New("automation: reloader needs a path and an engine")
	}
	if cfg.Load == nil {
		cfg.Load = func(path string) (*config.Config, error) { return config.Load(path, nil) }
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	r := &Reloader{cfg: cfg}
	if data, err := os.ReadFile(cfg.Path); err == nil {
		r.last, r.seen = sha256.Sum256(data), true
	}
	return r, nil
}

// Run watches until ctx is done. The file is compared by content, so touching it without a
// change does nothing; a signal reloads it even when unchanged.
func (r *Reloader) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.check(false)
		case <-r.cfg.Signal:
			r.check(true)
		}
	}
}

func (r *Reloader) check(force bool) {
	data, err := os.ReadFile(r.cfg.Path)
	if err != nil {
		if force {
			r.done(ReloadResult{Path: r.cfg.Path, Err: err})
		}
		return
	}
	sum := sha256.Sum256(data)
	if !force && r.seen && bytes.Equal(sum[:], r.last[:]) {
		return
	}
	r.last, r.seen = sum, true
	r.done(r.Reload())
}

// Reload loads and checks the file now and swaps the rules in when it is valid.
func (r *Reloader) Reload() ReloadResult {
	res := ReloadResult{Path: r.cfg.Path}
	c, err := r.cfg.Load(r.cfg.Path)
	if err != nil {
		res.Err = err
		errors.As(err, &res.Problems)
		return res
	}
	r.cfg.Engine.Swap(c)
	res.Applied = true
	return res
}

func (r *Reloader) done(res ReloadResult) {
	if res.Applied {
		n := 0
		for _, rs := range r.cfg.Engine.rules.Load().byTenant {
			n += len(rs)
		}
		r.cfg.Log.Info().Str("event", "config_reloaded").Str("file", res.Path).Int("automations", n).Send()
	} else {
		ev := r.cfg.Log.Error().Str("event", "config_reload_refused").Str("file", res.Path)
		if len(res.Problems) > 0 {
			lines := make([]string, len(res.Problems))
			for i, p := range res.Problems {
				lines[i] = p.String()
			}
			ev = ev.Strs("problems", lines)
		} else {
			ev = ev.Err(res.Err)
		}
		ev.Msg("the changed configuration is invalid; the rules in force are kept")
	}
	if r.cfg.OnReload != nil {
		r.cfg.OnReload(res)
	}
}
