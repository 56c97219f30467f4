package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/store"
)

func statusMsg(t *testing.T, ev gateway.StatusEvent) *bus.Msg {
	t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return &bus.Msg{Subject: bus.StatusSubject(ev.Tenant), Data: data, MsgID: ev.EventID(), NumDelivered: 1}
}

// logLines parses the JSON lines of buf.
func logLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestRecorderHandleBatch(t *testing.T) {
	st := newFakeStore()
	m := newOutbound(t)
	m.ID = gateway.NewMessageID()
	m.Status = gateway.StatusQueued
	m.CreatedAt = time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	st.put(*m)

	var logs bytes.Buffer
	var hooked []store.Applied
	rec, err := pipeline.NewRecorder(pipeline.RecorderConfig{
		Store: st, Bus: &fakeBus{}, Log: zerolog.New(&logs).Level(zerolog.InfoLevel),
		OnApplied: func(_ context.Context, a []store.Applied) { hooked = append(hooked, a...) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ev := func(s gateway.Status, after time.Duration) gateway.StatusEvent {
		return gateway.StatusEvent{MessageID: m.ID, Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Status: s, At: m.CreatedAt.Add(after)}
	}
	failed := ev(gateway.StatusFailed, 4*time.Second)
	failed.Error = &gateway.ErrorDetail{Code: "not_on_whatsapp", Message: "no account"}
	msgs := []*bus.Msg{
		statusMsg(t, ev(gateway.StatusSent, 842*time.Millisecond)),
		{Subject: "sb.status.acme", Data: []byte("not json"), NumDelivered: 1},
		statusMsg(t, ev(gateway.StatusRead, 3*time.Second)),
		statusMsg(t, ev(gateway.StatusDelivered, 2*time.Second)), // late: history only
		statusMsg(t, gateway.StatusEvent{MessageID: "msg_gone", Tenant: "acme", Status: gateway.StatusRead}),
	}
	errs := rec.HandleBatch(context.Background(), msgs)
	if len(errs) != len(msgs) {
		t.Fatalf("%d results for %d messages", len(errs), len(msgs))
	}
	for i, err := range errs {
		if want := i == 1; (err != nil) != want || (want && !bus.IsTerminal(err)) {
			t.Fatalf("result %d: %v", i, err)
		}
	}
	if len(st.applied) != 1 || len(st.applied[0]) != 4 {
		t.Fatalf("applied %v: want one batch of 4 events", st.applied)
	}
	if len(hooked) != 4 {
		t.Fatalf("hook saw %d applied events, want 4", len(hooked))
	}
	lines := logLines(t, &logs)
	if len(lines) != 2 {
		t.Fatalf("log lines %v: want one per advanced change (sent, read)", lines)
	}
	want := []map[string]any{
		{"level": "info", "event": "delivery", "msg_id": m.ID, "tenant": "acme", "channel": "whatsapp", "account": "sales",
			"to": "+49******5678", "subject": "s_0123456789ab", "status": "sent", "previous": "queued", "latency_ms": float64(842)},
		{"level": "info", "event": "delivery", "status": "read", "previous": "sent", "latency_ms": float64(3000)},
	}
	for i, w := range want {
		for k, v := range w {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v (%v)", i, k, lines[i][k], v, lines[i])
			}
		}
		if _, ok := lines[i]["error_code"]; ok {
			t.Errorf("line %d has an error_code without an error", i)
		}
	}
	if strings.Contains(logs.String(), testNumber) || strings.Contains(logs.String(), testText) {
		t.Fatal("the delivery log leaks the number or content")
	}

	// A failure after read is history only; a new message's failure is logged with its code.
	logs.Reset()
	m2 := newOutbound(t)
	m2.ID = gateway.NewMessageID()
	m2.Status = gateway.StatusQueued
	st.put(*m2)
	failed.MessageID = m2.ID
	if errs := rec.HandleBatch(context.Background(), []*bus.Msg{statusMsg(t, failed)}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	lines = logLines(t, &logs)
	if len(lines) != 1 || lines[0]["status"] != "failed" || lines[0]["error_code"] != "not_on_whatsapp" {
		t.Fatalf("failure line %v", lines)
	}
}

func TestRecorderStoreDown(t *testing.T) {
	st := newFakeStore()
	st.applyErr = gateway.Errorf(gateway.EUnavailable, "db down")
	rec, err := pipeline.NewRecorder(pipeline.RecorderConfig{Store: st, Bus: &fakeBus{}})
	if err != nil {
		t.Fatal(err)
	}
	ev := gateway.StatusEvent{MessageID: "msg_1", Tenant: "acme", Status: gateway.StatusSent}
	errs := rec.HandleBatch(context.Background(), []*bus.Msg{statusMsg(t, ev), statusMsg(t, ev)})
	for i, err := range errs {
		if err == nil || bus.IsTerminal(err) {
			t.Fatalf("result %d: %v; want a retryable error", i, err)
		}
	}
}
