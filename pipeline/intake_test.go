package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/store"
)

const (
	testNumber = "+4915112345678"
	testText   = "the invoice 4711 is overdue"
)

func newOutbound(t *testing.T) *gateway.Message {
	t.Helper()
	to, err := gateway.ParseAddress(gateway.WhatsApp, testNumber)
	if err != nil {
		t.Fatal(err)
	}
	return &gateway.Message{Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Peer: to, Content: gateway.Content{Text: testText}}
}

func TestIntakeAccept(t *testing.T) {
	optedOut := pipeline.StageFunc(func(context.Context, *gateway.Message) error {
		return gateway.Errorf(gateway.ERecipientOptedOut, "the recipient opted out")
	})
	tests := []struct {
		name        string
		stages      []pipeline.Stage
		publishErr  error
		createErr   error
		wantCode    string // error code from Accept
		wantCreated bool
		wantPublish bool
		wantRetry   bool
	}{
		{name: "accepted and published", wantCreated: true, wantPublish: true},
		{name: "stage rejects at accept", stages: []pipeline.Stage{optedOut}, wantCode: gateway.ERecipientOptedOut},
		{name: "store fails", createErr: gateway.Errorf(gateway.EUnavailable, "db down"), wantCode: gateway.EUnavailable},
		{name: "publish fails after the store write", publishErr: errors.New("bus down"), wantCreated: true, wantRetry: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newFakeStore()
			st.createErr = tt.createErr
			b := &fakeBus{fail: func(string) error { return tt.publishErr }}
			var retried []gateway.Dispatch
			var logs bytes.Buffer
			in, err := pipeline.NewIntake(pipeline.IntakeConfig{
				Store: st, Bus: b, Stages: tt.stages, Indexer: fakeSealer{},
				Retry: func(d gateway.Dispatch) { retried = append(retried, d) },
				Log:   zerolog.New(&logs),
			})
			if err != nil {
				t.Fatal(err)
			}
			m := newOutbound(t)
			got, _, created, err := in.Accept(context.Background(), store.NewMessage{Message: m, RequestHash: "h1"})
			if code := gateway.ErrorCode(err); code != tt.wantCode {
				t.Fatalf("Accept error %v (code %q), want code %q", err, code, tt.wantCode)
			}
			if created != tt.wantCreated {
				t.Fatalf("created = %v, want %v", created, tt.wantCreated)
			}
			if err != nil {
				if len(st.msgs) != 0 || len(b.all()) != 0 {
					t.Fatalf("a refused message left traces: %d stored, %d published", len(st.msgs), len(b.all()))
				}
				return
			}
			if got.ID == "" || !strings.HasPrefix(got.ID, "msg_") || got.Status != gateway.StatusAccepted || got.CreatedAt.IsZero() {
				t.Fatalf("accepted message %+v: want an id, status accepted and a creation time", got)
			}
			if _, ok := st.msgs[got.ID]; !ok {
				t.Fatal("message not stored")
			}
			pubs := b.all()
			if tt.wantPublish {
				if len(pubs) != 1 || pubs[0].Subject != "sb.send.acme" || pubs[0].MsgID != got.ID {
					t.Fatalf("published %+v, want one message on sb.send.acme with msg id %s", pubs, got.ID)
				}
				var d gateway.Dispatch
				if err := json.Unmarshal(pubs[0].Data, &d); err != nil {
					t.Fatal(err)
				}
				want := gateway.Dispatch{MessageID: got.ID, Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales"}
				if d != want {
					t.Fatalf("dispatch %+v, want %+v", d, want)
				}
				if bytes.Contains(pubs[0].Data, []byte(testText)) || bytes.Contains(pubs[0].Data, []byte(testNumber)) {
					t.Fatal("the SEND payload carries content or the number")
				}
			}
			if tt.wantRetry != (len(retried) == 1) {
				t.Fatalf("retried %v, want retry %v", retried, tt.wantRetry)
			}
			// The accepted log line: masked, indexed, never content or the number.
			var line map[string]any
			if err := json.Unmarshal(firstLine(logs.Bytes(), `"event":"delivery"`), &line); err != nil {
				t.Fatalf("no delivery line in %s", logs.String())
			}
			if line["status"] != "accepted" || line["to"] != "+49******5678" || !strings.HasPrefix(line["subject"].(string), "s_") || line["msg_id"] != got.ID {
				t.Fatalf("accepted line %v", line)
			}
			if strings.Contains(logs.String(), testText) || strings.Contains(logs.String(), testNumber) {
				t.Fatalf("log leaks content or the number: %s", logs.String())
			}
		})
	}
}

func TestIntakeIdempotentReplay(t *testing.T) {
	st := newFakeStore()
	b := &fakeBus{}
	in, err := pipeline.NewIntake(pipeline.IntakeConfig{Store: st, Bus: b})
	if err != nil {
		t.Fatal(err)
	}
	m1 := newOutbound(t)
	m1.IdempotencyKey = "k1"
	first, _, created, err := in.Accept(context.Background(), store.NewMessage{Message: m1, RequestHash: "h1"})
	if err != nil || !created {
		t.Fatalf("first accept: %v created=%v", err, created)
	}
	m2 := newOutbound(t)
	m2.IdempotencyKey = "k1"
	again, hash, created, err := in.Accept(context.Background(), store.NewMessage{Message: m2, RequestHash: "h2"})
	if err != nil || created {
		t.Fatalf("replay: %v created=%v", err, created)
	}
	if again.ID != first.ID || hash != "h1" {
		t.Fatalf("replay returned %s (hash %q), want %s (hash h1)", again.ID, hash, first.ID)
	}
	if n := len(b.all()); n != 1 {
		t.Fatalf("published %d times, want once", n)
	}
}

func TestResumerScan(t *testing.T) {
	st := newFakeStore()
	now := time.Now()
	// Ids carry their time: five old messages and a fresh one, all still accepted.
	var ids []string
	for i := range 5 {
		m := newOutbound(t)
		m.ID = idAt(t, now.Add(-time.Duration(10-i)*time.Minute))
		m.Status = gateway.StatusAccepted
		st.put(*m)
		ids = append(ids, m.ID)
	}
	fresh := newOutbound(t)
	fresh.ID = idAt(t, now)
	fresh.Status = gateway.StatusAccepted
	st.put(*fresh)
	routed := newOutbound(t)
	routed.ID = idAt(t, now.Add(-time.Hour))
	routed.Status = gateway.StatusQueued
	st.put(*routed)

	b := &fakeBus{}
	r, err := pipeline.NewResumer(pipeline.ResumerConfig{Store: st, Bus: b, PageSize: 2, MinAge: time.Minute, Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.Scan(context.Background(), time.Minute)
	if err != nil || n != 5 {
		t.Fatalf("periodic scan: %d, %v; want the 5 old ones", n, err)
	}
	for i, p := range b.all() {
		if p.MsgID != ids[i] || p.Subject != "sb.send.acme" {
			t.Fatalf("publish %d: %+v, want %s", i, p, ids[i])
		}
	}
	n, err = r.Scan(context.Background(), 0)
	if err != nil || n != 6 {
		t.Fatalf("start scan: %d, %v; want all 6 unfinished", n, err)
	}
	b.fail = func(string) error { return errors.New("bus down") }
	if _, err := r.Scan(context.Background(), 0); err == nil {
		t.Fatal("a failed publish must fail the scan")
	}
}

func TestResumerRetry(t *testing.T) {
	st := newFakeStore()
	b := &fakeBus{}
	r, err := pipeline.NewResumer(pipeline.ResumerConfig{Store: st, Bus: b, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	published := make(chan struct{})
	b.mu.Lock()
	var once sync.Once
	b.fail = func(string) error { once.Do(func() { close(published) }); return nil }
	b.mu.Unlock()
	r.Retry(gateway.Dispatch{MessageID: "msg_1", Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales"})
	select {
	case <-published:
	case <-time.After(10 * time.Second):
		t.Fatal("Retry did not publish")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p := b.all(); len(p) != 1 || p[0].MsgID != "msg_1" {
		t.Fatalf("published %+v", p)
	}
}

// idAt returns a message id whose ULID time is at.
func idAt(t *testing.T, at time.Time) string {
	t.Helper()
	return pipeline.InboundID("t", gateway.WhatsApp, "a", at.String(), at)
}

// firstLine returns the first line of b that contains s.
func firstLine(b []byte, s string) []byte {
	for _, l := range bytes.Split(b, []byte("\n")) {
		if bytes.Contains(l, []byte(s)) {
			return l
		}
	}
	return nil
}
