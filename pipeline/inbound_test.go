package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline"
)

func inboundEvent(t *testing.T) gateway.InboundEvent {
	t.Helper()
	from, err := gateway.ParseAddress(gateway.WhatsApp, testNumber)
	if err != nil {
		t.Fatal(err)
	}
	return gateway.InboundEvent{
		Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", ChannelMessageID: "3EB0AA",
		From: from, FromName: "Erika", Chat: "", Content: gateway.Content{Text: "STOP please, " + testText},
		At: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC),
	}
}

func TestPublishInboundSealsEverything(t *testing.T) {
	b := &fakeBus{}
	ev := inboundEvent(t)
	env, err := pipeline.PublishInbound(context.Background(), b, fakeSealer{}, ev)
	if err != nil {
		t.Fatal(err)
	}
	pubs := b.all()
	if len(pubs) != 1 || pubs[0].Subject != "sb.inbound.acme.whatsapp" || pubs[0].MsgID != "whatsapp:sales:3EB0AA" {
		t.Fatalf("published %+v", pubs)
	}
	for _, secret := range []string{testText, testNumber, "Erika"} {
		if bytes.Contains(pubs[0].Data, []byte(secret)) {
			t.Fatalf("INBOUND payload carries %q in the clear", secret)
		}
	}
	// The id is stable for the same channel message, time-ordered, and a message id.
	again, err := pipeline.SealInbound(context.Background(), fakeSealer{}, ev)
	if err != nil || again.ID != env.ID || !strings.HasPrefix(env.ID, "msg_") {
		t.Fatalf("ids %s, %s (%v): want the same msg_ id", env.ID, again.ID, err)
	}
	back, err := pipeline.OpenInbound(context.Background(), fakeSealer{}, env)
	if err != nil {
		t.Fatal(err)
	}
	ev.ID = env.ID
	if back.From != ev.From || back.FromName != ev.FromName || back.Content.Text != ev.Content.Text || back.ID != ev.ID || !back.At.Equal(ev.At) {
		t.Fatalf("opened %+v, want %+v", back, ev)
	}
	if _, err := pipeline.SealInbound(context.Background(), fakeSealer{}, gateway.InboundEvent{Tenant: "acme"}); gateway.ErrorCode(err) != gateway.EInvalidField {
		t.Fatalf("an inbound message without ids: %v", err)
	}
}

func TestInboundRecorderHandle(t *testing.T) {
	ctx := context.Background()
	ev := inboundEvent(t)
	pb := &fakeBus{}
	env, err := pipeline.PublishInbound(ctx, pb, fakeSealer{}, ev)
	if err != nil {
		t.Fatal(err)
	}
	msg := func(delivered uint64) *bus.Msg {
		p := pb.all()[0]
		return &bus.Msg{Subject: p.Subject, Data: p.Data, MsgID: p.MsgID, NumDelivered: delivered}
	}

	st := newFakeStore()
	var logs bytes.Buffer
	var handled []pipeline.Inbound
	var failHandler error
	rec, err := pipeline.NewInboundRecorder(pipeline.InboundRecorderConfig{
		Store: st, Bus: &fakeBus{}, Sealer: fakeSealer{}, Log: zerolog.New(&logs),
		Handlers: []pipeline.InboundHandler{pipeline.InboundHandlerFunc(func(_ context.Context, in pipeline.Inbound) error {
			handled = append(handled, in)
			return failHandler
		})},
	})
	if err != nil {
		t.Fatal(err)
	}

	// First delivery: stored, logged, handled; the handler fails, so the bus will redeliver.
	failHandler = errors.New("automation store down")
	if err := rec.Handle(ctx, msg(1)); err == nil {
		t.Fatal("a failing handler must fail the delivery")
	}
	stored := st.msgs[env.ID]
	if stored == nil || stored.Direction != gateway.Inbound || stored.Status != gateway.StatusReceived ||
		stored.Content.Text != ev.Content.Text || stored.Content.Extra["from_name"] != "Erika" || stored.Peer != ev.From {
		t.Fatalf("stored %+v", stored)
	}
	// The redelivery is not stored again, but the handlers run again.
	failHandler = nil
	if err := rec.Handle(ctx, msg(2)); err != nil {
		t.Fatal(err)
	}
	if len(handled) != 2 || !handled[1].Redelivered || handled[1].Message.ID != env.ID || handled[1].Subject != env.Subject {
		t.Fatalf("handled %+v", handled)
	}
	// The channel sends it again later (a fresh publish): stored once, handled once.
	if err := rec.Handle(ctx, msg(1)); err != nil {
		t.Fatal(err)
	}
	if len(handled) != 2 || len(st.inbound) != 1 {
		t.Fatalf("a channel redelivery was handled again (%d) or stored twice (%d)", len(handled), len(st.inbound))
	}
	lines := logLines(t, &logs)
	var inboundLines int
	for _, l := range lines {
		if l["event"] == "inbound" {
			inboundLines++
			if l["from"] != "+49******5678" || l["msg_id"] != env.ID || !strings.HasPrefix(l["subject"].(string), "s_") {
				t.Fatalf("inbound line %v", l)
			}
		}
	}
	if inboundLines != 1 {
		t.Fatalf("%d inbound lines, want 1: %v", inboundLines, lines)
	}
	for _, secret := range []string{testText, testNumber, "Erika"} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("the log leaks %q: %s", secret, logs.String())
		}
	}
}

func TestInboundRecorderErasedAndGarbage(t *testing.T) {
	ctx := context.Background()
	ev := inboundEvent(t)
	pb := &fakeBus{}
	env, err := pipeline.PublishInbound(ctx, pb, fakeSealer{}, ev)
	if err != nil {
		t.Fatal(err)
	}
	st := newFakeStore()
	rec, err := pipeline.NewInboundRecorder(pipeline.InboundRecorderConfig{
		Store: st, Bus: &fakeBus{}, Sealer: fakeSealer{erased: map[string]bool{env.Subject: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := pb.all()[0]
	if err := rec.Handle(ctx, &bus.Msg{Subject: p.Subject, Data: p.Data, NumDelivered: 1}); err != nil {
		t.Fatalf("an erased subject's message must be dropped: %v", err)
	}
	if len(st.msgs) != 0 {
		t.Fatal("an erased subject's message was stored")
	}
	bad, _ := json.Marshal(map[string]string{"nothing": "here"})
	if err := rec.Handle(ctx, &bus.Msg{Subject: p.Subject, Data: bad, NumDelivered: 1}); !bus.IsTerminal(err) {
		t.Fatalf("garbage: %v, want a dead letter", err)
	}
}
