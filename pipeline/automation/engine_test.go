package automation

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/store"
)

const tenantYAML = `
data_dir: /tmp/unused
tenants:
  - id: acme
    channels:
      whatsapp: {accounts: [{name: sales, driver: sandbox}, {name: support, driver: sandbox}]}
      teams: {accounts: [{name: ops, driver: sandbox}]}
    lists: {reminders: ["+4915112345678", "+4915112345679"]}
    templates: {reminder: "Reminder from {{.Rule}}"}
    automations:
`

func parse(t *testing.T, rules string) *config.Config {
	t.Helper()
	c, err := config.Parse("t.yaml", []byte(tenantYAML+rules))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func event(ch gateway.Channel, account, from, text string) gateway.InboundEvent {
	addr, err := gateway.ParseAddress(ch, from)
	if err != nil {
		panic(err)
	}
	return gateway.InboundEvent{
		ID: gateway.NewMessageID(), Tenant: "acme", Channel: ch, Account: account, ChannelMessageID: "c1",
		From: addr, Content: gateway.Content{Text: text}, At: eventTime,
	}
}

func mustAddress(ch gateway.Channel, s string) gateway.Address {
	a, err := gateway.ParseAddress(ch, s)
	if err != nil {
		panic(err)
	}
	return a
}

var eventTime = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

func TestTriggerMatchers(t *testing.T) {
	tests := []struct {
		name, trigger string
		ev            gateway.InboundEvent
		want          bool
	}{
		{"channel", `{channel: whatsapp}`, event(gateway.WhatsApp, "sales", "+4915112345678", "x"), true},
		{"other channel", `{channel: teams}`, event(gateway.WhatsApp, "sales", "+4915112345678", "x"), false},
		{"account", `{channel: whatsapp, account: support}`, event(gateway.WhatsApp, "sales", "+4915112345678", "x"), false},
		{"from", `{channel: whatsapp, from: ["+49 151 12345678"]}`, event(gateway.WhatsApp, "sales", "+4915112345678", "x"), true},
		{"other from", `{channel: whatsapp, from: "+4915112345679"}`, event(gateway.WhatsApp, "sales", "+4915112345678", "x"), false},
		{"equals", `{channel: whatsapp, text: {equals: "Opening hours"}}`, event(gateway.WhatsApp, "sales", "+4915112345678", " opening HOURS "), true},
		{"equals no", `{channel: whatsapp, text: {equals: "Opening hours"}}`, event(gateway.WhatsApp, "sales", "+4915112345678", "opening hours?"), false},
		{"contains_any", `{channel: whatsapp, text: {contains_any: [invoice, factura]}}`, event(gateway.WhatsApp, "sales", "+4915112345678", "Invoice 42 attached"), true},
		{"contains_any no", `{channel: whatsapp, text: {contains_any: [invoice, factura]}}`, event(gateway.WhatsApp, "sales", "+4915112345678", "hello"), false},
		{"regex", `{channel: whatsapp, text: {regex: "(?i)order #\\d+"}}`, event(gateway.WhatsApp, "sales", "+4915112345678", "where is ORDER #123?"), true},
		{"keyword", `{channel: whatsapp, text: {keyword: [hours, open]}}`, event(gateway.WhatsApp, "sales", "+4915112345678", " Open "), true},
		{"keyword not whole", `{channel: whatsapp, text: {keyword: open}}`, event(gateway.WhatsApp, "sales", "+4915112345678", "are you open"), false},
		{"all matchers", `{channel: whatsapp, text: {contains_any: [invoice], regex: "\\d"}}`, event(gateway.WhatsApp, "sales", "+4915112345678", "invoice"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := parse(t, "      - {name: r, when: {inbound: "+tt.trigger+"}, do: [{reply: {text: ok}}]}\n")
			got := New(Config{}, c).Plan(tt.ev, 0)
			if (len(got) == 1) != tt.want {
				t.Fatalf("matched %v, want %v", len(got) == 1, tt.want)
			}
		})
	}
}

func TestCondition(t *testing.T) {
	c := parse(t, `
      - name: weekday-morning
        when: {inbound: {channel: whatsapp}}
        if: 'hour < 12 and weekday != "Saturday" and not ("vip" in contact.tags) and text matches "^[A-Z]"'
        do: [{reply: {text: "morning {{.FromName | default \"there\"}}"}}]
`)
	e := New(Config{}, c)
	for _, tt := range []struct {
		text string
		want int
	}{{"Hello", 1}, {"hello", 0}} {
		got := e.Plan(event(gateway.WhatsApp, "sales", "+4915112345678", tt.text), 0)
		if len(got) != tt.want {
			t.Fatalf("%q: %d matches", tt.text, len(got))
		}
		if tt.want == 1 && got[0].Actions[0].Text != "morning there" {
			t.Fatalf("text %q", got[0].Actions[0].Text)
		}
	}
}

// fakeIntake stands in for pipeline.Intake: idempotency keys, consent refusals, failures.
type fakeIntake struct {
	mu       sync.Mutex
	byKey    map[string]*gateway.Message
	accepted []*gateway.Message
	optedOut map[string]bool
	fail     error
}

func (f *fakeIntake) Accept(_ context.Context, nm store.NewMessage) (*gateway.Message, string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := nm.Message
	if f.fail != nil {
		return nil, "", false, f.fail
	}
	if old, ok := f.byKey[m.IdempotencyKey]; ok {
		return old, nm.RequestHash, false, nil
	}
	if f.optedOut[m.Peer.String()] {
		return nil, "", false, gateway.Errorf(gateway.ERecipientOptedOut, "opted out")
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = eventTime
	}
	f.byKey[m.IdempotencyKey] = m
	f.accepted = append(f.accepted, m)
	return m, "", true, nil
}

// fakeStore is the engine's Store over a fakeIntake's messages, with tags and done actions in memory.
type fakeStore struct {
	in   *fakeIntake
	mu   sync.Mutex
	tags map[string][]string // by address
	done map[string]bool
}

func newFakeStore(in *fakeIntake) *fakeStore {
	return &fakeStore{in: in, tags: map[string][]string{}, done: map[string]bool{}}
}

func (f *fakeStore) UpdateTags(_ context.Context, _ string, subject gateway.Address, add, remove []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	tags := slices.DeleteFunc(slices.Clone(f.tags[subject.String()]), func(t string) bool { return slices.Contains(remove, t) })
	for _, t := range add {
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	f.tags[subject.String()] = tags
	return nil
}

func (f *fakeStore) Tags(_ context.Context, _ string, subject gateway.Address) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.tags[subject.String()]), nil
}

func (f *fakeStore) ActionDone(_ context.Context, tenant, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.done[tenant+id], nil
}

func (f *fakeStore) MarkActionDone(_ context.Context, tenant, id string, _ time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.done[tenant+id] = true
	return nil
}

func (f *fakeStore) LastOutbound(_ context.Context, tenant string, ch gateway.Channel, account string, peer gateway.Address) (*gateway.Message, error) {
	f.in.mu.Lock()
	defer f.in.mu.Unlock()
	for i := len(f.in.accepted) - 1; i >= 0; i-- {
		if m := f.in.accepted[i]; m.Tenant == tenant && m.Channel == ch && m.Account == account && m.Peer == peer {
			return m, nil
		}
	}
	return nil, gateway.Errorf(gateway.ENotFound, "none")
}

func (f *fakeStore) Message(_ context.Context, tenant, id string, _ bool) (*gateway.Message, error) {
	f.in.mu.Lock()
	defer f.in.mu.Unlock()
	for _, m := range f.in.accepted {
		if m.Tenant == tenant && m.ID == id {
			return m, nil
		}
	}
	return nil, gateway.Errorf(gateway.ENotFound, "none")
}

func (f *fakeStore) MessageIDByChannelID(_ context.Context, _ string, _ gateway.Channel, _, cid string) (string, error) {
	f.in.mu.Lock()
	defer f.in.mu.Unlock()
	for _, m := range f.in.accepted {
		if "c-"+m.ID == cid {
			return m.ID, nil
		}
	}
	return "", gateway.Errorf(gateway.ENotFound, "none")
}

type recorder struct {
	mu  sync.Mutex
	out []Outcome
}

func (r *recorder) add(o Outcome) { r.mu.Lock(); r.out = append(r.out, o); r.mu.Unlock() }

func newEngine(t *testing.T, rules string) (*Engine, *fakeIntake, *recorder) {
	in := &fakeIntake{byKey: map[string]*gateway.Message{}, optedOut: map[string]bool{}}
	rec := &recorder{}
	return New(Config{Intake: in, Store: newFakeStore(in), Log: zerolog.Nop(), OnAction: rec.add}, parse(t, rules)), in, rec
}

func inbound(ev gateway.InboundEvent) pipeline.Inbound {
	return pipeline.Inbound{Message: &gateway.Message{ID: ev.ID, Peer: ev.From}, Event: ev}
}

func TestRedeliveredEventActsOnce(t *testing.T) {
	e, in, rec := newEngine(t, `
      - name: fwd
        when: {inbound: {channel: whatsapp, text: {contains_any: [invoice]}}}
        do: [{forward: {to: "teams:channel:team1/chan1", template: "{{.From.Masked}}: {{.Text}}"}}, {reply: {text: thanks}}]
`)
	ev := event(gateway.WhatsApp, "sales", "+4915112345678", "Invoice 42")
	for range 3 {
		if err := e.HandleInbound(t.Context(), inbound(ev)); err != nil {
			t.Fatal(err)
		}
	}
	if len(in.accepted) != 2 {
		t.Fatalf("accepted %d messages, want 2", len(in.accepted))
	}
	fw := in.accepted[0]
	if fw.Channel != gateway.Teams || fw.Account != "ops" || fw.Hops != 1 || fw.Content.Text != "+49******5678: Invoice 42" {
		t.Fatalf("forward %+v", fw)
	}
	// The id is derived, not random: the same event, rule and action give the same id.
	p := e.Plan(ev, 0)
	if fw.ID != p[0].Actions[0].MessageID || !strings.HasPrefix(fw.ID, "msg_") {
		t.Fatalf("id %s is not derived (%s)", fw.ID, p[0].Actions[0].MessageID)
	}
	var results []string
	for _, o := range rec.out {
		results = append(results, o.Result)
	}
	if strings.Join(results, ",") != "accepted,accepted,duplicate,duplicate,duplicate,duplicate" {
		t.Fatalf("outcomes %v", results)
	}
}

// TestLoopStopsAtHopLimit: WhatsApp → Teams → WhatsApp → … forwards stop at the hop limit.
func TestLoopStopsAtHopLimit(t *testing.T) {
	e, in, rec := newEngine(t, `
      - name: wa-to-teams
        when: {inbound: {channel: whatsapp, text: {contains_any: [loop]}}}
        do: [{forward: {to: "teams:chat:19:x@thread.v2"}}]
      - name: teams-to-wa
        when: {inbound: {channel: teams, text: {contains_any: [loop]}}}
        do: [{forward: {to: "+4915112345678"}}]
`)
	ev := event(gateway.WhatsApp, "sales", "+4915112345678", "loop")
	for i := 0; i < 10; i++ {
		if err := e.HandleInbound(t.Context(), inbound(ev)); err != nil {
			t.Fatal(err)
		}
		if len(rec.out) > 0 && rec.out[len(rec.out)-1].Result == "loop_stopped" {
			break
		}
		// The recipient of the last forward echoes it back.
		last := in.accepted[len(in.accepted)-1]
		if last.Channel == gateway.Teams {
			ev = event(gateway.Teams, "ops", "teams:user:11111111-2222-3333-4444-555555555555", last.Content.Text)
			ev.Chat = last.Peer.String() // as the Teams adapter names the chat
		} else {
			ev = event(gateway.WhatsApp, "sales", last.Peer.String(), last.Content.Text)
		}
	}
	var hops []int
	for _, m := range in.accepted {
		hops = append(hops, m.Hops)
	}
	if len(in.accepted) != DefaultHopLimit || hops[len(hops)-1] != DefaultHopLimit {
		t.Fatalf("forwards with hops %v, want 1..%d then a stop", hops, DefaultHopLimit)
	}
	if last := rec.out[len(rec.out)-1]; last.Result != "loop_stopped" || last.Rule != "teams-to-wa" {
		t.Fatalf("last outcome %+v", last)
	}
}

func TestOutcomes(t *testing.T) {
	rules := `
      - name: fwd
        when: {inbound: {channel: whatsapp, account: sales}}
        do: [{send: {channel: whatsapp, account: support, to: "+4915199999999", text: "{{.Text}}"}}]
`
	t.Run("opted out is rejected, not retried", func(t *testing.T) {
		e, in, rec := newEngine(t, rules)
		in.optedOut["+4915199999999"] = true
		if err := e.HandleInbound(t.Context(), inbound(event(gateway.WhatsApp, "sales", "+4915112345678", "hi"))); err != nil {
			t.Fatal(err)
		}
		if len(rec.out) != 1 || rec.out[0].Result != "rejected" || rec.out[0].ErrorCode != gateway.ERecipientOptedOut || len(in.accepted) != 0 {
			t.Fatalf("outcomes %+v", rec.out)
		}
	})
	t.Run("transient error is retried", func(t *testing.T) {
		e, in, _ := newEngine(t, rules)
		in.fail = gateway.Errorf(gateway.EUnavailable, "store down")
		err := e.HandleInbound(t.Context(), inbound(event(gateway.WhatsApp, "sales", "+4915112345678", "hi")))
		if !errors.Is(err, in.fail) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("send goes where configured", func(t *testing.T) {
		e, in, _ := newEngine(t, rules)
		if err := e.HandleInbound(t.Context(), inbound(event(gateway.WhatsApp, "sales", "+4915112345678", "hi"))); err != nil {
			t.Fatal(err)
		}
		if m := in.accepted[0]; m.Account != "support" || m.Peer.String() != "+4915199999999" || m.Content.Text != "hi" {
			t.Fatalf("send %+v", m)
		}
	})
}

func TestSwapIsAtomic(t *testing.T) {
	e, _, _ := newEngine(t, "      - {name: a, when: {inbound: {channel: whatsapp}}, do: [{reply: {text: one}}]}\n")
	ev := event(gateway.WhatsApp, "sales", "+4915112345678", "x")
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 200 {
			p := e.Plan(ev, 0)
			if len(p) != 1 || (p[0].Actions[0].Text != "one" && p[0].Actions[0].Text != "two") {
				t.Errorf("plan %+v", p)
				return
			}
		}
	})
	e.Swap(parse(t, "      - {name: a, when: {inbound: {channel: whatsapp}}, do: [{reply: {text: two}}]}\n"))
	wg.Wait()
	if p := e.Plan(ev, 0); p[0].Actions[0].Text != "two" {
		t.Fatalf("after swap: %+v", p)
	}
}

// TestRuleFailingAtRunTimeLeavesOthers: a condition that fails on one message (int("abc")) skips
// its rule only.
func TestRuleFailingAtRunTimeLeavesOthers(t *testing.T) {
	e, in, rec := newEngine(t, `
      - name: numeric
        when: {inbound: {channel: whatsapp}}
        if: 'int(text) > 5'
        do: [{reply: {text: big}}]
      - name: always
        when: {inbound: {channel: whatsapp}}
        do: [{reply: {text: ok}}]
`)
	if err := e.HandleInbound(t.Context(), inbound(event(gateway.WhatsApp, "sales", "+4915112345678", "abc"))); err != nil {
		t.Fatal(err)
	}
	if len(in.accepted) != 1 || in.accepted[0].Content.Text != "ok" {
		t.Fatalf("accepted %+v", in.accepted)
	}
	if len(rec.out) != 2 || rec.out[0].Rule != "numeric" || rec.out[0].Result != "error" {
		t.Fatalf("outcomes %+v", rec.out)
	}
}
