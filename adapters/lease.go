package adapters

import "context"

// Leaser grants a process exclusive leases across replicas. *bus.Leases implements it.
type Leaser interface {
	// Hold waits until this process holds the lease on name, runs fn with a context that ends
	// when the lease is lost (or ctx ends), then releases the lease and returns fn's error. It
	// returns nil without calling fn when ctx ends first.
	Hold(ctx context.Context, name string, fn func(ctx context.Context) error) error
}

// LeaseName is the lease of an account: channel.tenant.account.
func (r *Runner) LeaseName() string {
	return string(r.cfg.Channel) + "." + r.cfg.Tenant + "." + r.cfg.Account
}

// Run runs the account until ctx is done: the adapter (with the runner as its sink) and the
// consumer of its dispatch subject. With a Lease it does so only while this process holds the
// account's lease, and waits to take it over again when it is lost. It returns nil when ctx
// ends, an error when the adapter or the consumer stops on its own (see run).
func (r *Runner) Run(ctx context.Context) error {
	if r.cfg.Lease == nil {
		return r.run(ctx)
	}
	for {
		err := r.cfg.Lease.Hold(ctx, r.LeaseName(), func(lctx context.Context) error {
			r.holding.Store(true)
			defer r.holding.Store(false)
			r.cfg.Log.Info().Str("event", "lease_held").Msg("this process holds the account: connecting it")
			return r.run(lctx)
		})
		if err != nil || ctx.Err() != nil {
			return err
		}
		r.cfg.Log.Warn().Str("event", "lease_lost").Msg("lost the account's lease: stopped it, waiting to take it over again")
	}
}

// Standby reports whether the runner waits for another replica's lease on its account.
func (r *Runner) Standby() bool {
	return r.cfg.Lease != nil && !r.holding.Load()
}
