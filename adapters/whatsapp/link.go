package whatsapp

import (
	"context"
	"errors"
	"strings"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

// LinkEventType names a step of linking.
type LinkEventType string

const (
	LinkQR          LinkEventType = "qr"           // Code is a QR payload to render; show it for Timeout
	LinkPairingCode LinkEventType = "pairing_code" // Code is the 8-character code to type on the phone
	LinkNotice      LinkEventType = "notice"       // Message is something to tell the person; linking goes on
	LinkSuccess     LinkEventType = "success"      // linked: Phone is the masked number
	LinkFailed      LinkEventType = "error"        // final: Message says why (Link also returns the error)
)

// LinkEvent is one step of linking, for a terminal or an SSE stream.
type LinkEvent struct {
	Type    LinkEventType `json:"type"`
	Code    string        `json:"code,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
	Phone   string        `json:"phone,omitempty"` // masked
	Message string        `json:"message,omitempty"`
}

// LinkOptions tune linking.
type LinkOptions struct {
	// Phone (E.164) asks for a pairing code for this number instead of QR codes.
	Phone string
	// Timeout bounds the whole link; default 3 minutes (WhatsApp rotates QR codes for ~160 s).
	Timeout time.Duration
	// ConnectTimeout bounds reaching WhatsApp; default 20 s. Without network Link fails after it.
	ConnectTimeout time.Duration
	// LoginWait is how long to wait, after pairing, for the first login; default 30 s. Linking
	// succeeds without it: the device is stored once pairing completes.
	LoginWait time.Duration
}

func (o LinkOptions) withDefaults() LinkOptions {
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Minute
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 20 * time.Second
	}
	if o.LoginWait <= 0 {
		o.LoginWait = 30 * time.Second
	}
	return o
}

// Link pairs a new companion device for the account: QR codes (or a pairing code with
// opts.Phone) go to emit as whatsmeow produces them. It refuses an account that is already
// linked. When linking fails, nothing of the half-made device stays in the store, and the error
// is a *gateway.Error with a clear message (unavailable: no network; timeout: not scanned in time).
func Link(ctx context.Context, st DeviceStore, newClient ClientFactory, opts LinkOptions, emit func(LinkEvent)) (err error) {
	opts = opts.withDefaults()
	if emit == nil {
		emit = func(LinkEvent) {}
	}
	defer func() {
		if err != nil {
			emit(LinkEvent{Type: LinkFailed, Message: gateway.ErrorMessage(err)})
		}
	}()
	var phoneDigits string
	if opts.Phone != "" {
		e164, err := gateway.NormalizePhone(opts.Phone)
		if err != nil {
			return gateway.FieldErrorf(gateway.EInvalidRecipient, "phone", "%s", gateway.ErrorMessage(err))
		}
		phoneDigits = strings.TrimPrefix(e164, "+")
	}
	if dev, err := st.Device(ctx); err != nil {
		return gateway.WrapError(gateway.EInternal, err, "could not read the device store")
	} else if dev != nil {
		return gateway.Errorf(gateway.EConflict, "this account is already linked (%s): run `switchboard whatsapp logout` first", gateway.MaskIdentifier("+"+dev.GetJID().User))
	}
	if err := st.Warm(ctx); err != nil {
		return gateway.WrapError(gateway.EInternal, err, "could not prepare the device store")
	}
	if newClient == nil {
		newClient = NewWhatsmeowClient(ClientOptions{})
	}

	linkCtx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	cli := newClient(st.NewDevice())
	connected := make(chan struct{}, 1)
	hid := cli.AddEventHandler(func(evt any) bool {
		if _, ok := evt.(*events.Connected); ok {
			select {
			case connected <- struct{}{}:
			default:
			}
		}
		return true
	})
	defer func() {
		cli.Disconnect()
		go cli.RemoveEventHandler(hid)
		if err != nil {
			// Leave nothing of a half-made device behind.
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer ccancel()
			if derr := st.DeleteAll(cctx); derr != nil {
				err = errors.Join(err, gateway.WrapError(gateway.EInternal, derr, "could not remove the half-made device"))
			}
		}
	}()

	qr, err := cli.GetQRChannel(linkCtx)
	if err != nil {
		return gateway.WrapError(gateway.EInternal, err, "could not start linking")
	}
	if err := dialWithin(linkCtx, cancel, opts.ConnectTimeout, cli.Connect); err != nil {
		if ctx.Err() != nil {
			return gateway.WrapError(gateway.ETimeout, ctx.Err(), "linking was cancelled")
		}
		return gateway.WrapError(gateway.EUnavailable, err, "could not reach WhatsApp within %s: check the network connection and proxy settings; nothing was linked", opts.ConnectTimeout)
	}
	pairingRequested := false
	for {
		var item whatsmeow.QRChannelItem
		var ok bool
		select {
		case item, ok = <-qr:
		case <-linkCtx.Done():
			return linkTimeout(ctx, opts)
		}
		if !ok {
			return linkTimeout(ctx, opts)
		}
		switch item.Event {
		case whatsmeow.QRChannelEventCode:
			if phoneDigits == "" {
				emit(LinkEvent{Type: LinkQR, Code: item.Code, Timeout: item.Timeout})
				continue
			}
			if pairingRequested {
				continue
			}
			pairingRequested = true
			code, err := cli.PairPhone(linkCtx, phoneDigits)
			if err != nil {
				if errors.Is(err, whatsmeow.ErrPhoneNumberTooShort) || errors.Is(err, whatsmeow.ErrPhoneNumberIsNotInternational) {
					return gateway.FieldErrorf(gateway.EInvalidRecipient, "phone", "WhatsApp refused the phone number: %v", err)
				}
				return gateway.WrapError(gateway.EUnavailable, err, "WhatsApp did not give a pairing code")
			}
			emit(LinkEvent{Type: LinkPairingCode, Code: code, Message: "on the phone: WhatsApp › Linked devices › Link with phone number, then type this code"})
		case whatsmeow.QRChannelSuccess.Event:
			jid := cli.LinkedJID()
			select { // let the first login finish the initial sync; the link holds without it
			case <-connected:
			case <-time.After(opts.LoginWait):
			case <-linkCtx.Done():
			}
			emit(LinkEvent{Type: LinkSuccess, Phone: gateway.MaskIdentifier("+" + jid.User), Message: "linked"})
			return nil
		case whatsmeow.QRChannelTimeout.Event:
			return linkTimeout(ctx, opts)
		case whatsmeow.QRChannelScannedWithoutMultidevice.Event:
			emit(LinkEvent{Type: LinkNotice, Message: "the phone's WhatsApp does not support linked devices: update it and scan again"})
		case whatsmeow.QRChannelClientOutdated.Event:
			return gateway.Errorf(gateway.EUnavailable, "WhatsApp rejected this client version: upgrade Switchboard")
		case whatsmeow.QRChannelEventError:
			return gateway.WrapError(gateway.EUnavailable, item.Error, "pairing failed")
		default:
			return gateway.Errorf(gateway.EUnavailable, "linking stopped unexpectedly (%s)", item.Event)
		}
	}
}

func linkTimeout(ctx context.Context, opts LinkOptions) error {
	if ctx.Err() != nil {
		return gateway.WrapError(gateway.ETimeout, ctx.Err(), "linking was cancelled")
	}
	what := "the QR code was not scanned"
	if opts.Phone != "" {
		what = "the pairing code was not entered"
	}
	return gateway.Errorf(gateway.ETimeout, "%s in time: run the command again", what)
}

// Link links this account through the running adapter, which picks the new device up at once.
func (a *Adapter) Link(ctx context.Context, opts LinkOptions, emit func(LinkEvent)) error {
	if !a.linking.TryLock() {
		return gateway.Errorf(gateway.EConflict, "a link of this account is already in progress")
	}
	defer a.linking.Unlock()
	if err := Link(ctx, a.cfg.Store, a.cfg.NewClient, opts, emit); err != nil {
		return err
	}
	select {
	case a.relinked <- struct{}{}:
	default:
	}
	return nil
}

// Logout unlinks the device on WhatsApp's side when it can and destroys its keys in any case.
// The account then shows logged_out and its queued messages wait for a new link.
func (a *Adapter) Logout(ctx context.Context) error {
	return a.unlink(ctx, true)
}

func (a *Adapter) unlink(ctx context.Context, remote bool) error {
	a.mu.Lock()
	cli := a.client
	a.mu.Unlock()
	var remoteErr error
	if remote && cli != nil && cli.IsLoggedIn() {
		remoteErr = cli.Logout(ctx)
	}
	a.setState(StateLoggedOut, "logged out by an operator", nil)
	if err := a.cfg.Store.DeleteAll(ctx); err != nil {
		return gateway.WrapError(gateway.EInternal, err, "could not destroy the device keys")
	}
	if remoteErr != nil {
		return gateway.WrapError(gateway.EUnavailable, remoteErr,
			"the keys are destroyed, but WhatsApp could not be told: remove the device on the phone (Linked devices)")
	}
	return nil
}

// Logout for a process that does not run the adapter (the CLI): destroys the keys; with a client
// connected it tells WhatsApp first.
func Logout(ctx context.Context, st DeviceStore, newClient ClientFactory, connectTimeout time.Duration) error {
	dev, err := st.Device(ctx)
	if err != nil {
		return gateway.WrapError(gateway.EInternal, err, "could not read the device store")
	}
	if dev == nil {
		return gateway.Errorf(gateway.ENotFound, "this account is not linked")
	}
	var remoteErr error
	if newClient != nil {
		if connectTimeout <= 0 {
			connectTimeout = 20 * time.Second
		}
		cli := newClient(dev)
		cctx, cancel := context.WithCancel(ctx)
		if err := dialWithin(cctx, cancel, connectTimeout, cli.Connect); err != nil {
			remoteErr = err
		} else {
			remoteErr = cli.Logout(cctx) // whatsmeow deletes the store on success
		}
		cli.Disconnect()
		cancel()
	}
	if err := st.DeleteAll(ctx); err != nil {
		return gateway.WrapError(gateway.EInternal, err, "could not destroy the device keys")
	}
	if remoteErr != nil {
		return gateway.WrapError(gateway.EUnavailable, remoteErr,
			"the keys are destroyed, but WhatsApp could not be told: remove the device on the phone (Linked devices)")
	}
	return nil
}

// LinkDevice is the adapter's Link for the HTTP API (POST /v1/accounts/whatsapp/{account}/link,
// through gateway/server's DeviceLinker): the same flow as `switchboard whatsapp link`, with each
// step reported by kind (qr, pairing_code, notice) and the linked number, masked, returned. When
// ctx ends (the client went away) the link is cancelled and leaves no device behind.
func (a *Adapter) LinkDevice(ctx context.Context, phone string, step func(kind, code, message string, expires time.Duration)) (maskedPhone string, err error) {
	err = a.Link(ctx, LinkOptions{Phone: phone}, func(e LinkEvent) {
		switch e.Type {
		case LinkQR, LinkPairingCode, LinkNotice:
			step(string(e.Type), e.Code, e.Message, e.Timeout)
		case LinkSuccess:
			maskedPhone = e.Phone
		case LinkFailed:
			// Link returns the error; the caller reports it.
		}
	})
	if err != nil {
		return "", err
	}
	return maskedPhone, nil
}

// AccountState is Status in the words of GET /v1/accounts (gateway/server's StateReporter):
// a temporary ban reads banned_until, with its end in bannedUntil.
func (a *Adapter) AccountState() adapters.AccountState {
	s := a.Status()
	state := string(s.State)
	if s.State == StateBanned {
		state = "banned_until"
	}
	return adapters.AccountState{State: state, Detail: s.Detail, Since: s.Since, BannedUntil: s.BannedUntil,
		LastConnected: s.LastConnected, LastSeenPhone: s.LastSeenPhone}
}
