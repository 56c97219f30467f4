package whatsapp

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// logLines hands over every log line the adapter writes (zerolog writes one line per Write).
type logLines chan string

func (l logLines) Write(p []byte) (int, error) {
	l <- string(p)
	return len(p), nil
}

// TestStateChangesAreLoggedAndStored: each change of state writes one log line naming the new
// and the previous state, and the store holds the state for `switchboard whatsapp accounts` and
// a restart; no line carries the account's phone number.
func TestStateChangesAreLoggedAndStored(t *testing.T) {
	lines := make(logLines, 1024)
	h := newHarness(t, true, func(c *Config) { c.Log = zerolog.New(lines) })
	h.waitState(StateConnected)
	cli := h.client()
	cli.Emit(&events.KeepAliveTimeout{ErrorCount: 1}) // tolerated: no change, no line
	cli.Emit(&events.LoggedOut{Reason: events.ConnectFailureLoggedOut})
	h.waitState(StateLoggedOut)

	var changes []string
	for done := false; !done; {
		select {
		case l := <-lines:
			if strings.Contains(l, "4915100000001") {
				t.Errorf("a log line carries the phone number: %s", l)
			}
			var e struct{ Event, State, Previous string }
			if err := json.Unmarshal([]byte(l), &e); err != nil || e.Event != "whatsapp_state" {
				continue
			}
			if e.State == e.Previous {
				t.Errorf("a line for no change: %s", l)
			}
			changes = append(changes, e.Previous+">"+e.State)
			done = e.State == string(StateLoggedOut)
		case <-time.After(10 * time.Second):
			t.Fatalf("no line for the logout; changes logged: %v", changes)
		}
	}
	if len(changes) < 2 || changes[len(changes)-1] != "connected>logged_out" || !strings.HasSuffix(changes[len(changes)-2], ">connected") {
		t.Fatalf("changes logged: %v", changes)
	}
	// The event handler stored the state before it returned.
	s, ok, err := h.store.LoadState(context.Background())
	if err != nil || !ok || s.State != string(StateLoggedOut) || !strings.Contains(s.Detail, "relink") || s.LastConnected.IsZero() {
		t.Fatalf("stored state %+v %v %v", s, ok, err)
	}
}

// TestLIDSenderResolvedFromTheStoredMapping: a message whose sender WhatsApp names only by LID
// is attributed to the phone number the device store maps it to (whatsmeow keeps the mapping).
func TestLIDSenderResolvedFromTheStoredMapping(t *testing.T) {
	h := newHarness(t, true)
	h.waitState(StateConnected)
	lid := types.NewJID("209876500007", types.HiddenUserServer)
	pn := types.NewJID("4915112340007", types.DefaultUserServer)
	if err := h.store.LIDs().PutLIDMapping(h.ctx, lid, pn); err != nil {
		t.Fatal(err)
	}
	if !h.client().Emit(inboundMessage("MLID", &waE2E.Message{Conversation: proto.String("hi")}, types.MessageSource{Chat: lid, Sender: lid})) {
		t.Fatal("inbound failed")
	}
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	if len(h.sink.inbound) != 1 {
		t.Fatalf("%d inbound", len(h.sink.inbound))
	}
	ev := h.sink.inbound[0]
	if ev.From.Kind != gateway.KindPhone || ev.From.Value != "+4915112340007" || ev.Content.Extra[ExtraSenderLID] != "209876500007@lid" {
		t.Fatalf("from %+v, extra %v", ev.From, ev.Content.Extra)
	}
}

// TestRealClientIsLossless: the factory for real whatsmeow clients turns on what lossless
// receive rests on (acknowledging only after the handler succeeded, the decrypted-event buffer)
// and leaves reconnecting to the adapter's capped, jittered backoff.
func TestRealClientIsLossless(t *testing.T) {
	st := newDeviceStore(t)
	cli, ok := NewWhatsmeowClient(ClientOptions{})(st.NewDevice()).(*realClient)
	if !ok {
		t.Fatal("the factory does not make a whatsmeow client")
	}
	if !cli.SynchronousAck || !cli.EnableDecryptedEventBuffer || cli.EnableAutoReconnect || cli.InitialAutoReconnect {
		t.Fatalf("SynchronousAck %v, decrypted-event buffer %v, auto-reconnect %v/%v",
			cli.SynchronousAck, cli.EnableDecryptedEventBuffer, cli.EnableAutoReconnect, cli.InitialAutoReconnect)
	}
}
