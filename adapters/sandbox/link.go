package sandbox

import (
	"context"
	"fmt"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// LinkStep is one step of a simulated link: a QR code to show, or a pairing code to type.
type LinkStep struct {
	PairingCode bool          // Code is a pairing code, not a QR payload
	Code        string        // never a real WhatsApp payload: nothing can be linked with it
	For         time.Duration // how long it is shown
}

// Link codes of the simulation.
const (
	linkQRCodes = 2
	// linkedNumber is the number a simulated link reports without a phone (a fictitious one).
	linkedNumber = "+15550100000"
)

// Link simulates linking a device, as the WhatsApp driver does for real, so the dashboard's flow
// can be tried on the sandbox: two QR codes (or one pairing code when phone is set), each shown
// for LinkStep on the adapter's clock, then success with the masked number. When ctx ends first,
// Link returns a timeout error and the account is unchanged.
func (a *Adapter) Link(ctx context.Context, phone string, emit func(LinkStep)) (maskedPhone string, err error) {
	steps := make([]LinkStep, 0, linkQRCodes)
	if phone != "" {
		steps = append(steps, LinkStep{PairingCode: true, Code: "SBOX-" + newID("")[:4], For: a.cfg.LinkStep})
	} else {
		for i := range linkQRCodes {
			code := fmt.Sprintf("sandbox-link:%s:%s:%d:%s", a.cfg.Channel, a.cfg.Account, i+1, newID(""))
			steps = append(steps, LinkStep{Code: code, For: a.cfg.LinkStep})
		}
	}
	for _, s := range steps {
		emit(s)
		if err := a.wait(ctx, a.cfg.LinkStep); err != nil {
			return "", gateway.WrapError(gateway.ETimeout, err, "linking was cancelled")
		}
	}
	if phone == "" {
		phone = linkedNumber
	}
	a.cfg.Log.Info().Str("event", "sandbox_linked").Msg("simulated link completed")
	return gateway.MaskIdentifier(phone), nil
}

// wait returns after d on the adapter's clock, or ctx's error when it ends first.
func (a *Adapter) wait(ctx context.Context, d time.Duration) error {
	elapsed := make(chan struct{})
	stop := a.cfg.AfterFunc(d, func() { close(elapsed) })
	select {
	case <-elapsed:
		return nil
	case <-ctx.Done():
		stop()
		return ctx.Err()
	}
}
