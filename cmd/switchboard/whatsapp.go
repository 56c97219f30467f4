package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mdp/qrterminal/v3"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	wastoreapi "go.mau.fi/whatsmeow/store"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/adapters/whatsapp"
	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/server"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
	"github.com/switchboard-gateway/switchboard/store/wastore"
)

// whatsappDriver builds the adapter of one whatsmeow account: its encrypted device store in the
// gateway's database, pacing from the YAML, and the real whatsmeow client (or the test's).
func (g *globals) whatsappDriver(ctx context.Context, env server.DriverEnv) (adapters.Adapter, error) {
	st, err := deviceStore(ctx, env.DB, env.Keyring, env.Tenant, env.Account.Name)
	if err != nil {
		return nil, err
	}
	cfg, err := g.whatsappConfig(env.Tenant, env.Account, st, env.Log)
	if err != nil {
		return nil, err
	}
	return whatsapp.New(cfg)
}

// deviceStore is the account's whatsmeow device store, in the same database as everything else and
// sealed with the same keyring. Its tables are created on first use.
func deviceStore(ctx context.Context, db *storesql.DB, kr *crypt.Keyring, tenant, account string) (*wastore.Container, error) {
	dialect, err := wastore.ParseDialect(db.Driver())
	if err != nil {
		return nil, err
	}
	if err := wastore.Migrate(ctx, db.SQL(), dialect); err != nil {
		return nil, err
	}
	return wastore.New(db.SQL(), dialect, wastore.KeyringSealer(kr), tenant, account, wastore.Options{})
}

// whatsappConfig maps a whatsmeow account of the YAML onto the adapter's config. The adapter logs
// and records every state change itself (event=whatsapp_state).
func (g *globals) whatsappConfig(tenant string, acct config.AccountConfig, st *wastore.Container, log zerolog.Logger) (whatsapp.Config, error) {
	w := acct.WhatsMeow
	if w == nil || w.RatePerMinute < 1 || w.FirstContactPerHour < 1 || w.Burst < 1 {
		return whatsapp.Config{}, gateway.FieldErrorf(gateway.EInvalidField, "whatsmeow", "whatsapp account %s needs a valid whatsmeow section", acct.Name)
	}
	pacing := whatsapp.Pacing{
		Interval:             time.Minute / time.Duration(w.RatePerMinute),
		Burst:                w.Burst,
		FirstContactInterval: time.Hour / time.Duration(w.FirstContactPerHour),
		Jitter:               w.Jitter,
		ReachoutLock:         w.ReachoutLock,
	}
	if w.Jitter == 0 {
		pacing.Jitter = -1 // the YAML said none; the adapter's zero means its default
	}
	cfg := whatsapp.Config{
		Tenant: tenant, Account: acct.Name, Store: st,
		NewClient: whatsapp.NewWhatsmeowClient(whatsapp.ClientOptions{HTTPClient: g.channelHTTP}),
		Pacing:    pacing,
		Media:     whatsapp.MediaLimits{MaxBytes: int64(w.MediaMaxSize)},
		Log:       log,
	}
	if g.whatsappTest != nil {
		g.whatsappTest(&cfg)
	}
	return cfg, nil
}

func newWhatsAppCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "whatsapp", Short: "WhatsApp accounts: link, logout, state"}
	var tenant, account, phone string
	var timeout, connectTimeout time.Duration
	link := &cobra.Command{
		Use:   "link",
		Short: "Link the account's WhatsApp number as a companion device (QR code, or a pairing code with --phone)",
		Long: `Link the account's WhatsApp number as a companion device of the phone.

Without --phone a QR code is shown in the terminal, replaced by a new one as WhatsApp rotates them:
scan it on the phone under WhatsApp › Settings › Linked devices › Link a device. With --phone
+E164 a pairing code is printed instead, to type on the phone under Linked devices › Link with
phone number. The device keys are stored encrypted; a failed link leaves nothing behind. A server
that runs the account picks the new link up by itself.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withWhatsAppAccount(cmd, tenant, account, func(ctx context.Context, wc whatsapp.Config, acct config.AccountConfig) error {
				// whatsmeow sends the device name from a package variable when it registers a new
				// device; this process links one account and then exits.
				wastoreapi.DeviceProps.Os = proto.String(acct.WhatsMeow.DeviceName)
				out := g.stderr
				err := whatsapp.Link(ctx, wc.Store, wc.NewClient, whatsapp.LinkOptions{
					Phone: phone, Timeout: timeout, ConnectTimeout: connectTimeout,
				}, func(e whatsapp.LinkEvent) { printLinkEvent(out, e) })
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "linked tenant %s, WhatsApp account %s\n", tenant, account)
				return nil
			})
		},
	}
	link.Flags().StringVar(&phone, "phone", "", "link with a pairing code for this number (E.164, e.g. +4915112345678) instead of a QR code")
	link.Flags().DurationVar(&timeout, "timeout", 3*time.Minute, "give up when the link is not completed within this time")
	link.Flags().DurationVar(&connectTimeout, "connect-timeout", 20*time.Second, "give up when WhatsApp cannot be reached within this time")

	logout := &cobra.Command{
		Use:   "logout",
		Short: "Unlink the account's device from WhatsApp and destroy its keys",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withWhatsAppAccount(cmd, tenant, account, func(ctx context.Context, wc whatsapp.Config, _ config.AccountConfig) error {
				err := whatsapp.Logout(ctx, wc.Store, wc.NewClient, connectTimeout)
				if gateway.ErrorCode(err) == gateway.ENotFound {
					return err
				}
				// The keys are gone either way (an unreachable WhatsApp only means the phone still
				// lists the device): record it for `whatsapp accounts`.
				if serr := wc.Store.SaveState(ctx, wastore.AccountState{State: string(whatsapp.StateLoggedOut), Detail: "logged out by an operator"}); serr != nil && err == nil {
					err = serr
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "logged out tenant %s, WhatsApp account %s: the device keys are destroyed\n", tenant, account)
				return nil
			})
		},
	}
	logout.Flags().DurationVar(&connectTimeout, "connect-timeout", 20*time.Second, "how long to try to reach WhatsApp to unlink the device there")

	accounts := &cobra.Command{
		Use:   "accounts",
		Short: "Show each WhatsApp account's state as last recorded",
		RunE:  func(cmd *cobra.Command, _ []string) error { return g.whatsappAccounts(cmd) },
	}
	for _, c := range []*cobra.Command{link, logout} {
		c.Flags().StringVar(&tenant, "tenant", "", "tenant id")
		c.Flags().StringVar(&account, "account", "", "WhatsApp account name")
		_ = c.MarkFlagRequired("tenant")
		_ = c.MarkFlagRequired("account")
	}
	cmd.AddCommand(link, logout, accounts)
	return cmd
}

// printLinkEvent tells the person at the terminal what to do.
func printLinkEvent(w io.Writer, e whatsapp.LinkEvent) {
	switch e.Type {
	case whatsapp.LinkQR:
		fmt.Fprintf(w, "\nScan this QR code on the phone: WhatsApp › Settings › Linked devices › Link a device (valid for %s; a new one follows)\n\n", e.Timeout.Round(time.Second))
		qrterminal.GenerateHalfBlock(e.Code, qrterminal.L, w)
	case whatsapp.LinkPairingCode:
		fmt.Fprintf(w, "\nPairing code: %s\n%s\n", e.Code, e.Message)
	case whatsapp.LinkNotice:
		fmt.Fprintln(w, e.Message)
	case whatsapp.LinkSuccess:
		fmt.Fprintf(w, "\nLinked to %s.\n", e.Phone)
	case whatsapp.LinkFailed:
		// The command's error says it; nothing to add here.
	}
}

// whatsappAccounts prints every WhatsApp account of the configuration with its recorded state.
func (g *globals) whatsappAccounts(cmd *cobra.Command) error {
	cfg, err := g.load(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	var db *storesql.DB
	var kr *crypt.Keyring
	w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "TENANT\tACCOUNT\tDRIVER\tSTATE\tSINCE\tPHONE\tDETAIL")
	for _, t := range cfg.Tenants {
		cc := t.Channel(gateway.WhatsApp)
		if cc == nil {
			continue
		}
		for _, a := range cc.Accounts {
			state, since, phone, detail := "-", "-", "-", ""
			if a.Driver == config.DriverWhatsMeow {
				if db == nil {
					if db, kr, err = server.OpenStore(ctx, cfg, g.dev, zerolog.Nop()); err != nil {
						return err
					}
					defer db.Close()
				}
				state, since, phone, detail = accountState(ctx, db, kr, t.ID, a.Name)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, a.Name, a.Driver, state, since, phone, detail)
		}
	}
	return w.Flush()
}

// accountState reads one account's recorded state and linked number (masked).
func accountState(ctx context.Context, db *storesql.DB, kr *crypt.Keyring, tenant, account string) (state, since, phone, detail string) {
	st, err := deviceStore(ctx, db, kr, tenant, account)
	if err != nil {
		return "error", "-", "-", gateway.ErrorMessage(err)
	}
	state, since, phone = string(whatsapp.StateUnlinked), "-", "-"
	dev, err := st.Device(ctx)
	if err != nil {
		return "error", "-", "-", gateway.ErrorMessage(err)
	}
	if dev != nil {
		phone = gateway.MaskIdentifier("+" + dev.GetJID().User)
		state = string(whatsapp.StateDisconnected) // linked; no server has recorded more yet
	}
	s, ok, err := st.LoadState(ctx)
	if err != nil {
		return "error", "-", phone, gateway.ErrorMessage(err)
	}
	if ok {
		state, detail = s.State, s.Detail
		if !s.UpdatedAt.IsZero() {
			since = s.UpdatedAt.Local().Format(time.DateTime)
		}
		if !s.BannedUntil.IsZero() {
			detail += fmt.Sprintf(" (until %s)", s.BannedUntil.Local().Format(time.DateTime))
		}
		if !s.LastSeenPhone.IsZero() && dev != nil {
			detail = strings.TrimSpace(detail + " " + phoneSeen(s.LastSeenPhone, time.Now()))
		}
	}
	if dev == nil && state != string(whatsapp.StateLoggedOut) {
		state = string(whatsapp.StateUnlinked) // a state recorded before the device went away
	}
	return state, since, phone, detail
}

// phoneUnlinkWarning is how long a phone may stay offline before the listing warns: WhatsApp
// unlinks a companion device whose phone has been offline for about 14 days.
const phoneUnlinkWarning = 10 * 24 * time.Hour

// phoneSeen says when the linked phone was last active, with a warning when that is long ago.
func phoneSeen(seen, now time.Time) string {
	out := "phone last seen " + seen.Local().Format(time.DateTime)
	if now.Sub(seen) > phoneUnlinkWarning {
		out += fmt.Sprintf(" — %d days ago: open WhatsApp on the phone, or WhatsApp will unlink this device after about 14 days", int(now.Sub(seen).Hours()/24))
	}
	return out
}

// withWhatsAppAccount opens the encrypted store and runs fn with one whatsmeow account's adapter
// config (its device store and client factory).
func (g *globals) withWhatsAppAccount(cmd *cobra.Command, tenant, account string, fn func(context.Context, whatsapp.Config, config.AccountConfig) error) error {
	_, acct, db, kr, err := g.openAccount(cmd, tenant, gateway.WhatsApp, account, config.DriverWhatsMeow)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := cmd.Context()
	st, err := deviceStore(ctx, db, kr, tenant, account)
	if err != nil {
		return err
	}
	wc, err := g.whatsappConfig(tenant, *acct, st, zerolog.Nop())
	if err != nil {
		return err
	}
	return fn(ctx, wc, *acct)
}
