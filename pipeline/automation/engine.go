// Package automation runs a tenant's automations (the rules under automations: in
// switchboard.yaml, typed and checked by config): it matches inbound messages against the rules'
// triggers and conditions and carries out their actions — forward, reply, send — by creating
// messages through the normal Intake, so consent, statuses and the delivery log apply to them as to
// any API send.
//
// Actions are idempotent: the message of an action has an id and an idempotency key derived from
// the inbound event, the rule and the action's index, so a redelivered event never sends twice.
// Loops stop: every message an automation creates carries the hop count of what caused it plus one,
// and an answer to such a message inherits its count; at the hop limit a rule no longer acts.
package automation

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/expr-lang/expr"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/store"
)

// Acceptor accepts an outbound message (pipeline.Intake implements it).
type Acceptor interface {
	Accept(ctx context.Context, nm store.NewMessage) (msg *gateway.Message, existingHash string, created bool, err error)
}

// DefaultHopLimit is how many automation steps a chain of messages may take.
const DefaultHopLimit = 3

// Config wires an Engine.
type Config struct {
	Intake Acceptor // required for HandleInbound; Plan needs none
	Log    zerolog.Logger
	// HopLimit: an inbound message with this many hops or more starts no action. Default 3.
	HopLimit int
	// HopMemory is how long an answer to a message that a forward or send created inherits its
	// hop count (automatic echoes come within seconds; a person answering later starts afresh).
	// Default 2m.
	HopMemory time.Duration
	Clock     func() time.Time
	// OnAction, when set, sees the outcome of every action and every rule stopped by the hop
	// limit, after it is final (tests, metrics).
	OnAction func(Outcome)
}

// Outcome is what became of one planned action.
type Outcome struct {
	Planned
	// Cause is the inbound message id that started the rule, or schedule:<RFC 3339 time> for
	// a scheduled one.
	Cause string `json:"cause"`
	// Result: accepted (a message was created), duplicate (created on an earlier delivery of
	// the event), rejected (policy refused it, ErrorCode says why), loop_stopped (the hop limit;
	// Action is -1) or error (the rule could not be evaluated on the message; Action is -1).
	Result    string `json:"result"`
	ErrorCode string `json:"error_code,omitempty"`
}

// Engine matches inbound messages against the rules and acts. Its rules can be swapped at any
// time (hot reload); a message is handled by one consistent set.
type Engine struct {
	cfg   Config
	rules atomic.Pointer[ruleSet]
	hops  *hopMemory
}

type ruleSet struct {
	byTenant map[string][]config.Automation
	replaced chan struct{} // closed when a newer set is swapped in
}

// New returns an Engine with the rules of c (already validated).
func New(cfg Config, c *config.Config) *Engine {
	if cfg.HopLimit <= 0 {
		cfg.HopLimit = DefaultHopLimit
	}
	if cfg.HopMemory <= 0 {
		cfg.HopMemory = 2 * time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	e := &Engine{cfg: cfg, hops: newHopMemory(10000)}
	e.Swap(c)
	return e
}

// Swap replaces the rules with those of c, which Validate (or Load) has checked, atomically.
func (e *Engine) Swap(c *config.Config) {
	rs := &ruleSet{byTenant: map[string][]config.Automation{}, replaced: make(chan struct{})}
	if c != nil {
		for _, t := range c.Tenants {
			rs.byTenant[t.ID] = t.Rules
		}
	}
	if old := e.rules.Swap(rs); old != nil {
		close(old.replaced)
	}
}

// Rules returns the tenant's current rules.
func (e *Engine) Rules(tenant string) []config.Automation {
	return e.rules.Load().byTenant[tenant]
}

// Planned is one action a rule would take (dry run) or took.
type Planned struct {
	Rule           string          `json:"rule"`
	Action         int             `json:"action"`
	Kind           string          `json:"kind"`
	Channel        gateway.Channel `json:"channel"`
	Account        string          `json:"account"`
	To             gateway.Address `json:"-"`
	ToMasked       string          `json:"to"`
	Text           string          `json:"text"`
	MessageID      string          `json:"message_id"`
	IdempotencyKey string          `json:"idempotency_key"`
	Hops           int             `json:"hops"`
}

// Match is a rule that matched, with its actions; Skipped says why it does nothing.
type Match struct {
	Rule    string    `json:"rule"`
	Actions []Planned `json:"actions"`
	Skipped string    `json:"skipped,omitempty"`
	failed  bool      // Skipped because the rule could not be evaluated (not the hop limit)
}

// Plan returns the rules of ev's tenant that match ev, in order, and what each would do, without
// doing anything. hops is the hop count of ev (0 for a message a person wrote). A rule that
// cannot be evaluated on ev (its condition or a template fails at run time) is returned with
// Skipped saying why and no actions; the other rules are not affected.
func (e *Engine) Plan(ev gateway.InboundEvent, hops int) []Match {
	var out []Match
	for _, r := range e.Rules(ev.Tenant) {
		if r.Inbound == nil || !matches(*r.Inbound, ev) {
			continue
		}
		if r.IfProg != nil {
			v, err := expr.Run(r.IfProg, conditionEnv(ev, hops))
			if err != nil {
				out = append(out, Match{Rule: r.Name, Skipped: "the condition failed: " + firstLine(err.Error()), failed: true})
				continue
			}
			if ok, _ := v.(bool); !ok {
				continue
			}
		}
		m := Match{Rule: r.Name}
		if hops >= e.cfg.HopLimit {
			m.Skipped = "hop limit reached: the message comes from a chain of automations"
			out = append(out, m)
			continue
		}
		for i, a := range r.Do {
			p, err := plan(r, i, a, ev, hops)
			if err != nil {
				m = Match{Rule: r.Name, Skipped: "a template failed: " + firstLine(err.Error()), failed: true}
				break
			}
			m.Actions = append(m.Actions, p)
		}
		out = append(out, m)
	}
	return out
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func plan(r config.Automation, i int, a config.Action, ev gateway.InboundEvent, hops int) (Planned, error) {
	p := Planned{Rule: r.Name, Action: i, Kind: a.Kind, Channel: a.Channel, Account: a.Account, To: a.To, Hops: hops + 1}
	if a.Kind == config.ActionReply {
		p.Channel, p.Account, p.To = ev.Channel, ev.Account, ev.From
	}
	p.ToMasked = p.To.Masked()
	var buf bytes.Buffer
	if err := a.Template.Execute(&buf, templateData(r.Name, ev)); err != nil {
		return p, gateway.WrapError(gateway.EInvalidField, err, "automation %s: %s", r.Name, a.Path)
	}
	p.Text = buf.String()
	key := "automation:" + ev.ID + ":" + r.Name + ":" + strconv.Itoa(i)
	p.IdempotencyKey = key
	p.MessageID = pipeline.InboundID(ev.Tenant, p.Channel, p.Account, key, ev.At)
	return p, nil
}

func templateData(rule string, ev gateway.InboundEvent) config.TemplateData {
	return config.TemplateData{
		Text: ev.Content.Text, From: config.TemplateAddress{Address: ev.From.String(), Masked: ev.From.Masked()},
		FromName: ev.FromName, Channel: string(ev.Channel), Account: ev.Account, Chat: ev.Chat, Rule: rule, At: ev.At,
	}
}

func conditionEnv(ev gateway.InboundEvent, hops int) config.ConditionEnv {
	at := ev.At.UTC()
	return config.ConditionEnv{
		Text: ev.Content.Text, From: ev.From.Masked(), FromName: ev.FromName, Channel: string(ev.Channel),
		Account: ev.Account, Chat: ev.Chat, Hour: at.Hour(), Weekday: at.Weekday().String(), Hops: hops,
		Contact: config.ConditionContact{Tags: []string{}},
	}
}

// matches reports whether an inbound event satisfies a trigger.
func matches(tr config.InboundTrigger, ev gateway.InboundEvent) bool {
	if tr.Channel != ev.Channel || (tr.Account != "" && tr.Account != ev.Account) {
		return false
	}
	if len(tr.From) > 0 {
		found := false
		for _, f := range tr.From {
			found = found || f == ev.From.String()
		}
		if !found {
			return false
		}
	}
	if tr.Chat != "" && tr.Chat != ev.Chat {
		return false
	}
	text := ev.Content.Text
	if ev.Content.Media != nil && ev.Content.Media.Caption != "" {
		text = strings.TrimSpace(text + "\n" + ev.Content.Media.Caption)
	}
	m := tr.Text
	if m.Equals != "" && !strings.EqualFold(strings.TrimSpace(text), strings.TrimSpace(m.Equals)) {
		return false
	}
	if len(m.ContainsAny) > 0 {
		lower, found := strings.ToLower(text), false
		for _, w := range m.ContainsAny {
			found = found || strings.Contains(lower, w)
		}
		if !found {
			return false
		}
	}
	if m.Regex != nil && !m.Regex.MatchString(text) {
		return false
	}
	if len(m.Keyword) > 0 {
		word, found := strings.ToUpper(strings.TrimSpace(text)), false
		for _, k := range m.Keyword {
			found = found || k == word
		}
		if !found {
			return false
		}
	}
	return true
}

// HandleInbound implements pipeline.InboundHandler: it runs the matching rules' actions. An error
// (the store or bus unavailable) makes the bus deliver the message again; the actions already
// taken are then found by their idempotency keys and not taken twice.
func (e *Engine) HandleInbound(ctx context.Context, in pipeline.Inbound) error {
	if e.cfg.Intake == nil || in.Message == nil || in.Message.Peer.IsZero() {
		return nil
	}
	ev := in.Event
	hops := e.hops.get(e.cfg.Clock(), hopKeys(ev.Tenant, ev.Channel, ev.Account, ev.From.String(), ev.Chat)...)
	for _, m := range e.Plan(ev, hops) {
		if m.failed {
			// It will not evaluate on a redelivery either: log it and go on with the other rules.
			e.cfg.Log.Warn().Str("event", "automation_error").Str("tenant", ev.Tenant).Str("rule", m.Rule).
				Str("cause", ev.ID).Str("error", m.Skipped).Send()
			e.notify(Outcome{Planned: Planned{Rule: m.Rule, Action: -1}, Cause: ev.ID, Result: "error"})
			continue
		}
		if m.Skipped != "" {
			e.cfg.Log.Warn().Str("event", "automation_loop_stopped").Str("tenant", ev.Tenant).Str("rule", m.Rule).
				Str("inbound_msg_id", ev.ID).Int("hops", hops).Send()
			e.notify(Outcome{Planned: Planned{Rule: m.Rule, Action: -1, Hops: hops}, Cause: ev.ID, Result: "loop_stopped"})
			continue
		}
		for _, p := range m.Actions {
			if err := e.act(ctx, ev.Tenant, ev.ID, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// act carries out one planned action caused by source: an inbound message id, or for a schedule
// the occurrence (schedule:<time>).
func (e *Engine) act(ctx context.Context, tenant, source string, p Planned) error {
	msg := &gateway.Message{
		ID: p.MessageID, Tenant: tenant, Direction: gateway.Outbound, Channel: p.Channel, Account: p.Account,
		Peer: p.To, Content: gateway.Content{Text: p.Text}, IdempotencyKey: p.IdempotencyKey, Hops: p.Hops,
		Metadata: map[string]string{"automation": p.Rule, "cause": source},
	}
	if p.Kind == config.ActionReply {
		msg.Content.ReplyTo = source
	}
	finish := func(result, code string) {
		l := e.cfg.Log.Info().Str("event", "automation").Str("tenant", tenant).Str("rule", p.Rule).
			Int("action", p.Action).Str("kind", p.Kind).Str("cause", source).Str("msg_id", p.MessageID).
			Str("channel", string(p.Channel)).Str("account", p.Account).Str("to", p.ToMasked).Int("hops", p.Hops).
			Str("outcome", result)
		if code != "" {
			l = l.Str("error_code", code)
		}
		l.Send()
		e.notify(Outcome{Planned: p, Cause: source, Result: result, ErrorCode: code})
	}
	_, _, created, err := e.cfg.Intake.Accept(ctx, store.NewMessage{Message: msg, RequestHash: p.IdempotencyKey})
	var ge *gateway.Error
	switch {
	case err == nil && created:
		if p.Kind != config.ActionReply {
			// An answer to a reply is a conversation, not a chain: only forwards and sends
			// pass their hop count on to the answer.
			e.hops.put(e.cfg.Clock(), e.cfg.HopMemory, p.Hops, hopKeys(tenant, p.Channel, p.Account, p.To.String(), p.To.Value)...)
		}
		finish("accepted", "")
		return nil
	case err == nil, errors.As(err, &ge) && ge.Code == gateway.EConflict:
		finish("duplicate", "") // created on an earlier delivery of this event
		return nil
	}
	if ge, rejected := pipeline.Rejection(err); rejected {
		// Policy refuses it, as it refuses an API send (recipient_opted_out …): final.
		finish("rejected", ge.Code)
		return nil
	}
	return err
}

func (e *Engine) notify(o Outcome) {
	if e.cfg.OnAction != nil {
		e.cfg.OnAction(o)
	}
}

func hopKeys(tenant string, ch gateway.Channel, account string, ids ...string) []string {
	var keys []string
	for _, id := range ids {
		if id != "" {
			keys = append(keys, tenant+"|"+string(ch)+"|"+account+"|"+id)
		}
	}
	return keys
}

// hopMemory remembers, for a while, the hop count of the last automation message sent to an
// address, so that an answer from there inherits it. It is bounded.
type hopMemory struct {
	mu    sync.Mutex
	max   int
	items map[string]hopEntry
}

type hopEntry struct {
	hops    int
	expires time.Time
}

func newHopMemory(max int) *hopMemory { return &hopMemory{max: max, items: map[string]hopEntry{}} }

func (h *hopMemory) put(now time.Time, ttl time.Duration, hops int, keys ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.items)+len(keys) > h.max {
		for k, e := range h.items {
			if now.After(e.expires) {
				delete(h.items, k)
			}
		}
		for k := range h.items {
			if len(h.items)+len(keys) <= h.max {
				break
			}
			delete(h.items, k)
		}
	}
	for _, k := range keys {
		h.items[k] = hopEntry{hops: hops, expires: now.Add(ttl)}
	}
}

func (h *hopMemory) get(now time.Time, keys ...string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	hops := 0
	for _, k := range keys {
		if e, ok := h.items[k]; ok {
			if now.After(e.expires) {
				delete(h.items, k)
				continue
			}
			hops = max(hops, e.hops)
		}
	}
	return hops
}
