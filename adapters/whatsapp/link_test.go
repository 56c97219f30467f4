package whatsapp

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store/wastore"
)

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// assertNoDevice checks that nothing of a device is left in the store.
func assertNoDevice(t *testing.T, st *wastore.Container) {
	t.Helper()
	ctx := context.Background()
	if dev, err := st.Device(ctx); err != nil || dev != nil {
		t.Errorf("a device is left after the failed link: %v %v", dev, err)
	}
	if n, _ := st.UploadedPreKeyCount(ctx); n != 0 {
		t.Errorf("%d prekeys left", n)
	}
	if s, _ := st.GetSession(ctx, "4915112345678:0"); s != nil {
		t.Error("a session is left")
	}
}

// TestLinkWithoutNetwork runs the real whatsmeow client against a network that refuses or
// swallows every connection: Link fails with a clear error, fast, and leaves nothing behind.
func TestLinkWithoutNetwork(t *testing.T) {
	refused := closedPort(t)
	tests := []struct {
		name string
		dial func(ctx context.Context, network, addr string) (net.Conn, error)
	}{
		{"connection refused", func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, refused)
		}},
		{"no answer", func(ctx context.Context, _, _ string) (net.Conn, error) {
			<-ctx.Done() // a black hole: only the connect timeout ends it
			return nil, ctx.Err()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newDeviceStore(t)
			hc := &http.Client{Transport: &http.Transport{DialContext: tt.dial, DialTLSContext: nil}}
			factory := NewWhatsmeowClient(ClientOptions{HTTPClient: hc})
			var events []LinkEvent
			start := time.Now()
			err := Link(context.Background(), st, factory, LinkOptions{ConnectTimeout: 2 * time.Second}, func(e LinkEvent) { events = append(events, e) })
			took := time.Since(start)
			t.Logf("after %s: %v", took.Round(time.Millisecond), err)
			if err == nil {
				t.Fatal("Link succeeded without a network")
			}
			if gateway.ErrorCode(err) != gateway.EUnavailable || !strings.Contains(gateway.ErrorMessage(err), "could not reach WhatsApp") {
				t.Errorf("error = %v (code %s)", err, gateway.ErrorCode(err))
			}
			if took > 30*time.Second {
				t.Errorf("took %s", took)
			}
			if len(events) != 1 || events[0].Type != LinkFailed || events[0].Message == "" {
				t.Errorf("events = %+v", events)
			}
			assertNoDevice(t, st)
		})
	}
}

func TestLinkOutcomes(t *testing.T) {
	ourJID := types.JID{User: "4915100000009", Device: 21, Server: types.DefaultUserServer}
	tests := []struct {
		name     string
		phone    string
		script   func(t *testing.T, c *fakeClient, e LinkEvent) // reacts to each event
		start    []whatsmeow.QRChannelItem
		cancel   bool
		wantCode string // "" = success
		wantEvts []LinkEventType
	}{
		{
			name:  "qr scanned",
			start: []whatsmeow.QRChannelItem{{Event: whatsmeow.QRChannelEventCode, Code: "2@a", Timeout: time.Minute}},
			script: func(t *testing.T, c *fakeClient, e LinkEvent) {
				if e.Type == LinkQR {
					if err := c.pair(context.Background(), ourJID); err != nil {
						t.Error(err)
					}
					c.qr <- whatsmeow.QRChannelSuccess
				}
			},
			wantEvts: []LinkEventType{LinkQR, LinkSuccess},
		},
		{
			name:  "pairing code",
			phone: "+49 151 12345678",
			start: []whatsmeow.QRChannelItem{{Event: whatsmeow.QRChannelEventCode, Code: "2@a"}, {Event: whatsmeow.QRChannelEventCode, Code: "2@b"}},
			script: func(t *testing.T, c *fakeClient, e LinkEvent) {
				if e.Type == LinkPairingCode {
					if e.Code != "ABCD-EFGH" || c.pairPhone != "4915112345678" {
						t.Errorf("pairing code %q for %q", e.Code, c.pairPhone)
					}
					_ = c.pair(context.Background(), ourJID)
					c.qr <- whatsmeow.QRChannelSuccess
				}
			},
			wantEvts: []LinkEventType{LinkPairingCode, LinkSuccess},
		},
		{
			name:     "codes run out",
			start:    []whatsmeow.QRChannelItem{{Event: whatsmeow.QRChannelEventCode, Code: "2@a"}, whatsmeow.QRChannelTimeout},
			wantCode: gateway.ETimeout,
			wantEvts: []LinkEventType{LinkQR, LinkFailed},
		},
		{
			name:  "pairing fails after the device was saved",
			start: []whatsmeow.QRChannelItem{{Event: whatsmeow.QRChannelEventCode, Code: "2@a"}},
			script: func(t *testing.T, c *fakeClient, e LinkEvent) {
				if e.Type == LinkQR {
					_ = c.pair(context.Background(), ourJID) // half-made: saved, then the pairing breaks
					c.qr <- whatsmeow.QRChannelItem{Event: whatsmeow.QRChannelEventError, Error: errors.New("invalid device signature")}
				}
			},
			wantCode: gateway.EUnavailable,
			wantEvts: []LinkEventType{LinkQR, LinkFailed},
		},
		{
			name:     "client outdated",
			start:    []whatsmeow.QRChannelItem{whatsmeow.QRChannelClientOutdated},
			wantCode: gateway.EUnavailable,
			wantEvts: []LinkEventType{LinkFailed},
		},
		{
			name:     "cancelled",
			start:    []whatsmeow.QRChannelItem{{Event: whatsmeow.QRChannelEventCode, Code: "2@a"}},
			cancel:   true,
			wantCode: gateway.ETimeout,
			wantEvts: []LinkEventType{LinkQR, LinkFailed},
		},
		{
			name:     "bad phone",
			phone:    "12",
			wantCode: gateway.EInvalidRecipient,
			wantEvts: []LinkEventType{LinkFailed},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newDeviceStore(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var cli *fakeClient
			factory := func(dev *store.Device) LinkClient {
				cli = newFakeClient(dev, realClock{})
				cli.qr = make(chan whatsmeow.QRChannelItem, 8)
				for _, it := range tt.start {
					cli.qr <- it
				}
				return cli
			}
			var got []LinkEventType
			err := Link(ctx, st, factory, LinkOptions{Phone: tt.phone, LoginWait: time.Millisecond}, func(e LinkEvent) {
				got = append(got, e.Type)
				if tt.script != nil {
					tt.script(t, cli, e)
				}
				if tt.cancel && e.Type == LinkQR {
					cancel()
				}
			})
			if gateway.ErrorCode(err) != tt.wantCode {
				t.Fatalf("err = %v (code %q), want code %q", err, gateway.ErrorCode(err), tt.wantCode)
			}
			if strings.Join(eventNames(got), ",") != strings.Join(eventNames(tt.wantEvts), ",") {
				t.Errorf("events %v, want %v", got, tt.wantEvts)
			}
			if tt.wantCode != "" {
				assertNoDevice(t, st)
				return
			}
			dev, err := st.Device(context.Background())
			if err != nil || dev == nil || dev.ID.String() != ourJID.String() {
				t.Errorf("linked device = %v, %v", dev, err)
			}
			if cli.IsConnected() {
				t.Error("Link left its client connected")
			}
			// A second link of a linked account is refused, and the device is kept.
			err = Link(context.Background(), st, factory, LinkOptions{}, nil)
			if gateway.ErrorCode(err) != gateway.EConflict {
				t.Errorf("second link: %v", err)
			}
			if dev, _ := st.Device(context.Background()); dev == nil {
				t.Error("the refused link removed the device")
			}
		})
	}
}

func eventNames(ts []LinkEventType) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = string(t)
	}
	return out
}

func TestLogoutDestroysKeys(t *testing.T) {
	h := newHarness(t, true)
	h.waitState(StateConnected)
	if err := h.a.Logout(h.ctx); err != nil {
		t.Fatal(err)
	}
	h.waitState(StateLoggedOut)
	if !h.client().loggedOut {
		t.Error("WhatsApp was not told")
	}
	assertNoDevice(t, h.store)
	if paused, _, _ := h.a.Paused(); !paused {
		t.Error("not paused after logout")
	}
}
