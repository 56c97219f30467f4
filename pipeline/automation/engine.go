// Package automation runs a tenant's automations (the rules under automations: in
// switchboard.yaml, typed and checked by config): it matches inbound messages, status changes,
// hook calls and schedules against the rules' triggers and conditions and carries out their
// actions. Messages (forward, reply, send) are created through the normal Intake, so consent,
// statuses and the delivery log apply to them as to any API send; webhook, set_consent and tag act
// on the event's subject (actions.go).
//
// Actions are idempotent: every action has an id derived from the event, the rule and the action's
// index, which is the idempotency key of its message, or is recorded as done in the store, so a
// redelivered event never acts twice. Loops stop: every message an automation creates carries the
// hop count of what caused it plus one, stored with the message; an answer linked to such a
// message (a reply to it, or the next message in its conversation) inherits that count, and at the
// hop limit a rule no longer acts.
package automation

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/expr-lang/expr"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
	"github.com/switchboard-gateway/switchboard/store"
)

// Acceptor accepts an outbound message (pipeline.Intake implements it).
type Acceptor interface {
	Accept(ctx context.Context, nm store.NewMessage) (msg *gateway.Message, existingHash string, created bool, err error)
}

// Store is what the engine reads and keeps: contact tags, actions done, and the messages an
// answer is linked to. store/sql.DB implements it.
type Store interface {
	store.Tags
	ActionDone(ctx context.Context, tenant, actionID string) (bool, error)
	MarkActionDone(ctx context.Context, tenant, actionID string, at time.Time) error
	LastOutbound(ctx context.Context, tenant string, ch gateway.Channel, account string, peer gateway.Address) (*gateway.Message, error)
	Message(ctx context.Context, tenant, id string, withContent bool) (*gateway.Message, error)
	MessageIDByChannelID(ctx context.Context, tenant string, channel gateway.Channel, account, channelMessageID string) (string, error)
}

// ConsentRecorder records consent changes (pipeline/consent.Registry: the API's registry, which
// logs and counts each change).
type ConsentRecorder interface {
	Record(ctx context.Context, c store.ConsentChange) (bool, error)
}

// DefaultHopLimit is how many automation steps a chain of messages may take.
const DefaultHopLimit = 3

// Metadata keys of a message an automation created.
const (
	MetaRule   = "automation"
	MetaCause  = "cause" // the event that started the rule (its origin)
	MetaAction = "automation_action"
	MetaHops   = "hops"
)

// Config wires an Engine.
type Config struct {
	Intake Acceptor // required for the Handle methods; Plan needs none
	// Store links answers to the messages they answer (hop counts), keeps tags and done actions.
	// Without it, every event counts 0 hops and webhook, set_consent and tag are not recorded done.
	Store   Store
	Consent ConsentRecorder // set_consent; without it the action is rejected
	// Restricted, when set, tells whether the processing of a subject is restricted: a status
	// change of a message to such a subject starts no rule (inbound messages are skipped before
	// they reach the engine).
	Restricted func(ctx context.Context, tenant string, subject gateway.Address) (bool, error)
	// Secret looks up the environment variable a webhook action names (secret_env).
	Secret func(name string) (string, bool)
	Log    zerolog.Logger
	// HopLimit: an event with this many hops or more starts no action. Default 3.
	HopLimit int
	// HopWindow is how long after an automation's message the next message in its conversation
	// counts as an answer to it (automatic echoes come within seconds; a person answering later
	// starts afresh). An explicit reply to the message always does. Default 2m.
	HopWindow time.Duration
	// StatusMaxAge: a status change older than this starts no rule (a new consumer does not act on
	// the stream's history). Default 1h.
	StatusMaxAge time.Duration
	// Webhook actions: attempts per delivery of the event (default 3), the wait after the first
	// failed one, doubling (default 500ms), and the timeout of one attempt (default 5s). When all
	// fail, the event is delivered again later.
	WebhookAttempts int
	WebhookBackoff  time.Duration
	WebhookTimeout  time.Duration
	// WebhookClient, when set, replaces the clients with the SSRF guard (tests).
	WebhookClient func(allowPrivate bool) *http.Client
	Clock         func() time.Time
	// OnAction, when set, sees the outcome of every action and every rule stopped by the hop
	// limit, after it is final (tests, metrics).
	OnAction func(Outcome)
}

// Outcome is what became of one planned action.
type Outcome struct {
	Planned
	// Cause is the id of the event that started the rule: an inbound message id, status:<message
	// id>:<status>, a hook event id, or schedule:<RFC 3339 time>.
	Cause string `json:"cause"`
	// Result: accepted (done), duplicate (done on an earlier delivery of the event), rejected
	// (refused for good, ErrorCode says why), loop_stopped (the hop limit; Action is -1) or error
	// (the rule could not be evaluated on the event; Action is -1).
	Result    string `json:"result"`
	ErrorCode string `json:"error_code,omitempty"`
}

// Engine matches events against the rules and acts. Its rules can be swapped at any time (hot
// reload); an event is handled by one consistent set.
type Engine struct {
	cfg     Config
	rules   atomic.Pointer[ruleSet]
	clients [2]*http.Client // webhook clients: [0] guarded, [1] allowing private targets
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
	if cfg.HopWindow <= 0 {
		cfg.HopWindow = 2 * time.Minute
	}
	if cfg.StatusMaxAge <= 0 {
		cfg.StatusMaxAge = time.Hour
	}
	if cfg.WebhookAttempts <= 0 {
		cfg.WebhookAttempts = 3
	}
	if cfg.WebhookBackoff <= 0 {
		cfg.WebhookBackoff = 500 * time.Millisecond
	}
	if cfg.WebhookTimeout <= 0 {
		cfg.WebhookTimeout = 5 * time.Second
	}
	if cfg.WebhookClient == nil {
		cfg.WebhookClient = func(allowPrivate bool) *http.Client { return delivery.NewClient(allowPrivate, cfg.WebhookTimeout) }
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	e := &Engine{cfg: cfg}
	e.clients = [2]*http.Client{cfg.WebhookClient(false), cfg.WebhookClient(true)}
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

// Event kinds.
const (
	KindInbound  = "inbound"
	KindStatus   = "status"
	KindHook     = "hook"
	KindSchedule = "schedule"
)

// Event is what starts rules: an inbound message, a status change, a hook call or a schedule's
// occurrence.
type Event struct {
	Kind   string
	ID     string // the cause of the actions; part of every action id
	Tenant string
	At     time.Time
	Hops   int // 0 for a message a person wrote, a hook call or a schedule

	Inbound *gateway.InboundEvent // inbound
	Status  *gateway.StatusEvent  // status
	Hook    string                // hook: its name
	Body    map[string]any        // hook: the JSON body

	// Subject is the contact the event is about — the sender of an inbound message, the recipient
	// of a message whose status changed — on Channel; zero for hooks and schedules.
	Subject gateway.Address
	Channel gateway.Channel
	Account string
	Tags    []string // the subject's tags
}

// InboundEvent is the Event of an inbound message with hops hops.
func InboundEvent(ev gateway.InboundEvent, hops int) Event {
	return Event{
		Kind: KindInbound, ID: ev.ID, Tenant: ev.Tenant, At: ev.At, Hops: hops, Inbound: &ev,
		Subject: ev.From, Channel: ev.Channel, Account: ev.Account,
	}
}

// Planned is one action a rule would take (dry run) or took.
type Planned struct {
	Rule           string          `json:"rule"`
	Action         int             `json:"action"`
	Kind           string          `json:"kind"`
	Channel        gateway.Channel `json:"channel,omitempty"`
	Account        string          `json:"account,omitempty"`
	To             gateway.Address `json:"-"`
	ToMasked       string          `json:"to,omitempty"`
	Text           string          `json:"text,omitempty"`
	MessageID      string          `json:"message_id,omitempty"`
	IdempotencyKey string          `json:"idempotency_key"` // the action id
	Hops           int             `json:"hops"`
	URL            string          `json:"url,omitempty"`      // webhook
	Consent        string          `json:"consent,omitempty"`  // set_consent: opted_in or opted_out
	Category       string          `json:"category,omitempty"` // set_consent
	AddTags        []string        `json:"add_tags,omitempty"`
	RemoveTags     []string        `json:"remove_tags,omitempty"`

	webhook *config.WebhookAction
}

// Match is a rule that matched, with its actions; Skipped says why it does nothing.
type Match struct {
	Rule    string    `json:"rule"`
	Actions []Planned `json:"actions"`
	Skipped string    `json:"skipped,omitempty"`
	failed  bool      // Skipped because the rule could not be evaluated (not the hop limit)
}

// Plan returns the rules of ev's tenant that match the inbound message ev, in order, and what
// each would do, without doing anything. hops is the hop count of ev (0 for a message a person
// wrote).
func (e *Engine) Plan(ev gateway.InboundEvent, hops int) []Match {
	return e.PlanEvent(InboundEvent(ev, hops))
}

// PlanEvent returns the rules of ev's tenant that ev starts, in order, and what each would do,
// without doing anything. A rule that cannot be evaluated on ev (its condition or a template
// fails at run time) is returned with Skipped saying why and no actions; the other rules are not
// affected.
func (e *Engine) PlanEvent(ev Event) []Match {
	var out []Match
	for _, r := range e.Rules(ev.Tenant) {
		if !triggered(r, ev) {
			continue
		}
		if m, ok := e.planRule(r, ev); ok {
			out = append(out, m)
		}
	}
	return out
}

func triggered(r config.Automation, ev Event) bool {
	switch ev.Kind {
	case KindInbound:
		return r.Inbound != nil && matches(*r.Inbound, *ev.Inbound)
	case KindStatus:
		return r.Status != nil && statusMatches(*r.Status, *ev.Status)
	case KindHook:
		return r.Hook != nil && r.Hook.Name == ev.Hook
	}
	return false // the scheduler plans its rules itself
}

// planRule evaluates r's condition on ev and plans its actions; ok=false when the condition is false.
func (e *Engine) planRule(r config.Automation, ev Event) (Match, bool) {
	if r.IfProg != nil {
		v, err := expr.Run(r.IfProg, conditionEnv(ev))
		if err != nil {
			return Match{Rule: r.Name, Skipped: "the condition failed: " + firstLine(err.Error()), failed: true}, true
		}
		if ok, _ := v.(bool); !ok {
			return Match{}, false
		}
	}
	m := Match{Rule: r.Name}
	if ev.Hops >= e.cfg.HopLimit {
		m.Skipped = "hop limit reached: the event comes from a chain of automations"
		return m, true
	}
	for i, a := range r.Do {
		ps, err := plan(r, i, a, ev)
		if err != nil {
			return Match{Rule: r.Name, Skipped: "a template failed: " + firstLine(err.Error()), failed: true}, true
		}
		m.Actions = append(m.Actions, ps...)
	}
	return m, true
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// plan is what action i of r does for ev: one Planned, or one per member of a send's list.
func plan(r config.Automation, i int, a config.Action, ev Event) ([]Planned, error) {
	key := "automation:" + ev.ID + ":" + r.Name + ":" + strconv.Itoa(i)
	p := Planned{Rule: r.Name, Action: i, Kind: a.Kind, IdempotencyKey: key, Hops: ev.Hops + 1}
	switch a.Kind {
	case config.ActionWebhook:
		p.URL, p.webhook = a.Webhook.URL, a.Webhook
		return []Planned{p}, nil
	case config.ActionConsent:
		p.Channel, p.Account, p.To, p.ToMasked = ev.Channel, ev.Account, ev.Subject, ev.Subject.Masked()
		p.Consent, p.Category = a.ConsentState, a.ConsentCategory
		return []Planned{p}, nil
	case config.ActionTag:
		p.Channel, p.Account, p.To, p.ToMasked = ev.Channel, ev.Account, ev.Subject, ev.Subject.Masked()
		p.AddTags, p.RemoveTags = a.AddTags, a.RemoveTags
		return []Planned{p}, nil
	}
	var buf bytes.Buffer
	if err := a.Template.Execute(&buf, templateData(r.Name, a, ev)); err != nil {
		return nil, gateway.WrapError(gateway.EInvalidField, err, "automation %s: %s", r.Name, a.Path)
	}
	p.Channel, p.Account, p.Text = a.Channel, a.Account, buf.String()
	if a.Kind == config.ActionReply {
		p.Channel, p.Account = ev.Channel, ev.Account
	}
	to := []gateway.Address{a.To}
	switch {
	case a.Kind == config.ActionReply:
		to = []gateway.Address{ev.Subject}
	case a.ToList != "":
		to = a.List
	}
	out := make([]Planned, 0, len(to))
	for j, addr := range to {
		q := p
		q.To, q.ToMasked = addr, addr.Masked()
		if a.ToList != "" {
			// The position in the list, not the number: the key is stored in the clear.
			q.IdempotencyKey = key + ":" + strconv.Itoa(j)
		}
		q.MessageID = pipeline.InboundID(ev.Tenant, q.Channel, q.Account, q.IdempotencyKey, ev.At)
		out = append(out, q)
	}
	return out, nil
}

func templateData(rule string, a config.Action, ev Event) config.TemplateData {
	d := config.TemplateData{Channel: string(a.Channel), Account: a.Account, Rule: rule, At: ev.At, Hook: ev.Body}
	switch {
	case ev.Inbound != nil:
		in := ev.Inbound
		d.Text, d.From = in.Content.Text, config.TemplateAddress{Address: in.From.String(), Masked: in.From.Masked()}
		d.FromName, d.Channel, d.Account, d.Chat = in.FromName, string(in.Channel), in.Account, in.Chat
	case ev.Status != nil:
		s := ev.Status
		d.Channel, d.Account = string(s.Channel), s.Account
		d.Status = config.TemplateStatus{MessageID: s.MessageID, Status: string(s.Status), To: ev.Subject.Masked()}
		if s.Error != nil {
			d.Status.ErrorCode = s.Error.Code
		}
	}
	return d
}

func conditionEnv(ev Event) config.ConditionEnv {
	at := ev.At.UTC()
	env := config.ConditionEnv{
		Event: ev.Kind, Hour: at.Hour(), Weekday: at.Weekday().String(), Hops: ev.Hops, Hook: ev.Body,
		Contact: config.ConditionContact{Tags: ev.Tags}, Channel: string(ev.Channel), Account: ev.Account,
	}
	if env.Contact.Tags == nil {
		env.Contact.Tags = []string{}
	}
	if env.Hook == nil {
		env.Hook = map[string]any{}
	}
	if in := ev.Inbound; in != nil {
		env.Text, env.From, env.FromName, env.Chat = in.Content.Text, in.From.Masked(), in.FromName, in.Chat
	}
	if s := ev.Status; s != nil {
		env.Status, env.From = string(s.Status), ev.Subject.Masked()
		if s.Error != nil {
			env.Error = s.Error.Code
		}
	}
	return env
}

func statusMatches(tr config.StatusTrigger, ev gateway.StatusEvent) bool {
	if (tr.Channel != "" && tr.Channel != ev.Channel) || (tr.Account != "" && tr.Account != ev.Account) {
		return false
	}
	for _, s := range tr.In {
		if s == ev.Status {
			return true
		}
	}
	return false
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
