package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline"
)

func sendMsg(t *testing.T, d gateway.Dispatch, delivered uint64) *bus.Msg {
	t.Helper()
	data, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return &bus.Msg{Subject: bus.SendSubject(d.Tenant), Data: data, MsgID: d.MessageID, NumDelivered: delivered}
}

func TestRouterHandle(t *testing.T) {
	reject := pipeline.StageFunc(func(context.Context, *gateway.Message) error {
		return gateway.Errorf(gateway.ERecipientOptedOut, "the recipient opted out")
	})
	transient := pipeline.StageFunc(func(context.Context, *gateway.Message) error {
		return gateway.Errorf(gateway.EUnavailable, "consent store down")
	})
	later := pipeline.StageFunc(func(context.Context, *gateway.Message) error {
		return pipeline.RetryLater(3*time.Second, gateway.Errorf(gateway.ERateLimited, "out of tokens"))
	})
	var seen *gateway.Message
	peek := pipeline.StageFunc(func(_ context.Context, m *gateway.Message) error { seen = m; return nil })

	tests := []struct {
		name        string
		status      gateway.Status // stored status; "" = no such message
		stages      []pipeline.Stage
		noStore     bool   // the router runs on the envelope alone
		failSubject string // publishes to this stream fail
		data        []byte // raw payload instead of the dispatch
		wantErr     bool
		wantTerm    bool
		wantDelay   time.Duration
		wantSubj    []string // subjects published, in order
		wantStatus  []gateway.Status
		wantCode    string
	}{
		{name: "routes an accepted message", status: gateway.StatusAccepted, stages: []pipeline.Stage{peek},
			wantSubj: []string{"sb.status.acme", "sb.dispatch.whatsapp.acme.sales"}, wantStatus: []gateway.Status{gateway.StatusQueued}},
		{name: "a queued message is dispatched again", status: gateway.StatusQueued, wantSubj: []string{"sb.dispatch.whatsapp.acme.sales"}},
		{name: "ignores a sent message", status: gateway.StatusSent},
		{name: "ignores a rejected message", status: gateway.StatusRejected},
		{name: "drops a message that is gone", status: ""},
		{name: "stage rejects", status: gateway.StatusAccepted, stages: []pipeline.Stage{peek, reject},
			wantSubj: []string{"sb.status.acme"}, wantStatus: []gateway.Status{gateway.StatusRejected}, wantCode: gateway.ERecipientOptedOut},
		{name: "stage rejects a queued message", status: gateway.StatusQueued, stages: []pipeline.Stage{reject},
			wantSubj: []string{"sb.status.acme"}, wantStatus: []gateway.Status{gateway.StatusRejected}, wantCode: gateway.ERecipientOptedOut},
		{name: "transient stage error retries", status: gateway.StatusAccepted, stages: []pipeline.Stage{transient}, wantErr: true},
		{name: "retry later carries its delay", status: gateway.StatusAccepted, stages: []pipeline.Stage{later}, wantErr: true, wantDelay: 3 * time.Second},
		{name: "queued publish fails: no dispatch", status: gateway.StatusAccepted, failSubject: bus.StreamStatus, wantErr: true},
		{name: "dispatch publish fails after queued", status: gateway.StatusAccepted, failSubject: bus.StreamDispatch, wantErr: true,
			wantSubj: []string{"sb.status.acme"}, wantStatus: []gateway.Status{gateway.StatusQueued}},
		{name: "without a store: routes the envelope, reading nothing", noStore: true, stages: []pipeline.Stage{peek},
			wantSubj: []string{"sb.status.acme", "sb.dispatch.whatsapp.acme.sales"}, wantStatus: []gateway.Status{gateway.StatusQueued}},
		{name: "without a store: a stage rejects", noStore: true, stages: []pipeline.Stage{reject},
			wantSubj: []string{"sb.status.acme"}, wantStatus: []gateway.Status{gateway.StatusRejected}, wantCode: gateway.ERecipientOptedOut},
		{name: "garbage is a dead letter", data: []byte("{nope"), wantErr: true, wantTerm: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen = nil
			st := newFakeStore()
			m := newOutbound(t)
			m.ID = gateway.NewMessageID()
			if tt.status != "" {
				m.Status = tt.status
				st.put(*m)
			}
			b := &fakeBus{fail: func(subject string) error {
				if tt.failSubject != "" && bus.StreamFor(subject) == tt.failSubject {
					return gateway.Errorf(gateway.EUnavailable, "bus down")
				}
				return nil
			}}
			cfg := pipeline.RouterConfig{Store: st, Bus: b, Stages: tt.stages}
			if tt.noStore {
				cfg.Store = nil
			}
			r, err := pipeline.NewRouter(cfg)
			if err != nil {
				t.Fatal(err)
			}
			msg := sendMsg(t, gateway.Dispatch{MessageID: m.ID, Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales"}, 1)
			if tt.data != nil {
				msg.Data = tt.data
			}
			err = r.Handle(context.Background(), msg)
			if (err != nil) != tt.wantErr || bus.IsTerminal(err) != tt.wantTerm {
				t.Fatalf("Handle: %v; want error %v, terminal %v", err, tt.wantErr, tt.wantTerm)
			}
			if d, ok := pipeline.RetryAfter(err); ok != (tt.wantDelay > 0) || d != tt.wantDelay {
				t.Fatalf("retry delay %v (%v), want %v", d, ok, tt.wantDelay)
			}
			pubs := b.all()
			var subjects []string
			for _, p := range pubs {
				subjects = append(subjects, p.Subject)
				if bus.StreamFor(p.Subject) == bus.StreamDispatch && p.MsgID != m.ID {
					t.Fatalf("dispatch published with msg id %s, want %s", p.MsgID, m.ID)
				}
			}
			if !equal(subjects, tt.wantSubj) {
				t.Fatalf("published to %v, want %v", subjects, tt.wantSubj)
			}
			evs := statusEvents(t, pubs)
			var statuses []gateway.Status
			for _, ev := range evs {
				statuses = append(statuses, ev.Status)
				if ev.MessageID != m.ID || ev.Tenant != "acme" || ev.Channel != gateway.WhatsApp || ev.Account != "sales" || ev.At.IsZero() {
					t.Fatalf("event %+v", ev)
				}
				if tt.wantCode != "" && (ev.Error == nil || ev.Error.Code != tt.wantCode) {
					t.Fatalf("event error %+v, want code %s", ev.Error, tt.wantCode)
				}
			}
			if !equal(statuses, tt.wantStatus) {
				t.Fatalf("status events %v, want %v", statuses, tt.wantStatus)
			}
			switch {
			case seen == nil:
			case tt.noStore:
				if seen.ID != m.ID || seen.Tenant != "acme" || seen.Channel != gateway.WhatsApp || seen.Account != "sales" || !seen.Peer.IsZero() {
					t.Fatalf("stages saw %+v: want the routing envelope only", seen)
				}
			case seen.Peer.String() != testNumber || seen.Content.Text != "":
				t.Fatalf("stages saw %+v: want the peer, without content", seen)
			}
		})
	}
}

func TestRejection(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("plain"), false},
		{gateway.Errorf(gateway.ERecipientOptedOut, "x"), true},
		{gateway.Errorf(gateway.EOutsideWindow, "x"), true},
		{gateway.Errorf(gateway.EInternal, "x"), false},
		{gateway.Errorf(gateway.EUnavailable, "x"), false},
		{gateway.Errorf(gateway.ETimeout, "x"), false},
		{gateway.Errorf(gateway.ERateLimited, "x"), false},
		{pipeline.RetryLater(time.Second, gateway.Errorf(gateway.EConsentRequired, "x")), false},
		{errors.Join(errors.New("wrapped"), gateway.Errorf(gateway.EConsentRequired, "x")), true},
	}
	for _, tt := range tests {
		if _, got := pipeline.Rejection(tt.err); got != tt.want {
			t.Errorf("Rejection(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
