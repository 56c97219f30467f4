package whatsapp

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

// The shapes gateway/server looks for on a driver's adapter (it links no driver, so it cannot
// name this package's types).
var _ interface {
	LinkDevice(ctx context.Context, phone string, step func(kind, code, message string, expires time.Duration)) (string, error)
	AccountState() adapters.AccountState
} = (*Adapter)(nil)

// showQR makes every new client of h offer one QR code.
func (h *harness) showQR() {
	h.mu.Lock()
	h.prepare = func(c *fakeClient) {
		c.qr = make(chan whatsmeow.QRChannelItem, 4)
		c.qr <- whatsmeow.QRChannelItem{Event: whatsmeow.QRChannelEventCode, Code: "2@qr", Timeout: 20 * time.Second}
	}
	h.mu.Unlock()
}

func TestLinkDeviceForTheAPI(t *testing.T) {
	h := newHarness(t, false)
	if st := h.a.AccountState(); st.State != "unlinked" {
		t.Fatalf("state before the link: %s", st.State)
	}
	h.showQR()
	var steps []string
	phone, err := h.a.LinkDevice(h.ctx, "", func(kind, code, _ string, expires time.Duration) {
		steps = append(steps, fmt.Sprintf("%s %s %s", kind, code, expires))
		c := h.client()
		if err := c.pair(h.ctx, types.JID{User: "4915100000001", Device: 14, Server: types.DefaultUserServer}); err != nil {
			t.Error(err)
		}
		c.qr <- whatsmeow.QRChannelSuccess
	})
	if err != nil || phone != "+49******0001" {
		t.Fatalf("LinkDevice = %q, %v", phone, err)
	}
	if len(steps) != 1 || steps[0] != "qr 2@qr 20s" {
		t.Errorf("steps: %q", steps)
	}
	h.waitState(StateConnected) // the running adapter picks the new device up at once
	if st := h.a.AccountState(); st.State != "connected" || st.Since.IsZero() || st.LastConnected.IsZero() {
		t.Errorf("after the link: %+v", st)
	}

	// A temporary ban reads banned_until, with its end.
	h.client().Emit(&events.TemporaryBan{Code: events.TempBanSentToTooManyPeople, Expire: time.Hour})
	h.waitState(StateBanned)
	if st := h.a.AccountState(); st.State != "banned_until" || !st.BannedUntil.Equal(h.clock.Now().Add(time.Hour)) {
		t.Errorf("banned: %+v", st)
	}
}

func TestLinkDeviceCancelledLeavesNoDevice(t *testing.T) {
	h := newHarness(t, false)
	h.showQR()
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	_, err := h.a.LinkDevice(ctx, "", func(kind, _, _ string, _ time.Duration) {
		if kind == "qr" {
			cancel() // the dashboard's client went away
		}
	})
	if gateway.ErrorCode(err) != gateway.ETimeout {
		t.Fatalf("err = %v", err)
	}
	assertNoDevice(t, h.store)
	if st := h.a.AccountState(); st.State != "unlinked" {
		t.Errorf("state: %s", st.State)
	}
	// The account can be linked again at once.
	h.showQR()
	_, err = h.a.LinkDevice(h.ctx, "", func(string, string, string, time.Duration) {
		c := h.client()
		if err := c.pair(h.ctx, types.JID{User: "4915100000001", Device: 15, Server: types.DefaultUserServer}); err != nil {
			t.Error(err)
		}
		c.qr <- whatsmeow.QRChannelSuccess
	})
	if err != nil {
		t.Fatalf("second link: %v", err)
	}
}

func TestLinkDeviceWithPairingCode(t *testing.T) {
	h := newHarness(t, false)
	h.showQR()
	var steps []string
	var linking *fakeClient
	phone, err := h.a.LinkDevice(h.ctx, "+4915100000001", func(kind, code, message string, _ time.Duration) {
		steps = append(steps, kind+" "+code)
		if message == "" {
			t.Errorf("no instructions with the %s", kind)
		}
		c := h.client()
		linking = c
		if err := c.pair(h.ctx, types.JID{User: "4915100000001", Device: 16, Server: types.DefaultUserServer}); err != nil {
			t.Error(err)
		}
		c.qr <- whatsmeow.QRChannelSuccess
	})
	if err != nil || phone != "+49******0001" {
		t.Fatalf("LinkDevice = %q, %v", phone, err)
	}
	if len(steps) != 1 || steps[0] != "pairing_code ABCD-EFGH" {
		t.Errorf("steps: %q", steps)
	}
	linking.mu.Lock()
	asked := linking.pairPhone
	linking.mu.Unlock()
	if asked != "4915100000001" {
		t.Errorf("pairing code asked for %q", asked)
	}
}
