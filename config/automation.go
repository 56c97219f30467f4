package config

import (
	"fmt"
	"io"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"text/template"
	tparse "text/template/parse"
	"time"
	"unicode"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Automation is one rule of a tenant's automations, typed and checked from the YAML by Validate
// (TenantConfig.Rules). Exactly one of Inbound, Schedule, Status and Hook is set.
type Automation struct {
	Name     string
	Line     int // where the rule starts in the file
	Path     string
	Inbound  *InboundTrigger
	Schedule *ScheduleTrigger
	Status   *StatusTrigger
	Hook     *HookTrigger
	// If is an optional condition in the expr language (github.com/expr-lang/expr) over
	// ConditionEnv; "" is always true.
	If     string
	IfProg *vm.Program
	Do     []Action
}

// InboundTrigger matches inbound messages. Empty fields match everything.
type InboundTrigger struct {
	Channel gateway.Channel // required
	Account string
	From    []string // canonical addresses (gateway.Address.String())
	Chat    string
	Text    TextMatch
}

// ScheduleTrigger fires at the times of a cron expression (minute hour day-of-month month
// day-of-week, or a descriptor such as @daily) in a time zone.
type ScheduleTrigger struct {
	Cron     string
	Timezone string // IANA name; default UTC
	Location *time.Location
	Spec     cron.Schedule
}

// StatusTrigger matches status changes of the tenant's outbound messages.
type StatusTrigger struct {
	In      []gateway.Status // required
	Channel gateway.Channel  // "" matches every channel
	Account string
}

// HookTrigger matches a call of POST /v1/hooks/{Name} by the tenant.
type HookTrigger struct {
	Name string
}

// Trigger names the rule's trigger: inbound, schedule, status or hook.
func (a Automation) Trigger() string {
	switch {
	case a.Schedule != nil:
		return "schedule"
	case a.Status != nil:
		return "status"
	case a.Hook != nil:
		return "hook"
	}
	return "inbound"
}

// Named holds a tenant's contact lists and message templates by name.
type Named struct {
	Lists     map[string]ContactList
	Templates map[string]NamedTemplate
}

// TextMatch matches the text of an inbound message; every set matcher must match.
type TextMatch struct {
	Equals      string         // whole text, case-insensitive, trimmed
	ContainsAny []string       // any of the words, case-insensitive
	Regex       *regexp.Regexp // RE2
	Keyword     []string       // the whole text is one of these words, case-insensitive (upper-cased here)
}

// Action kinds.
const (
	ActionForward = "forward"
	ActionReply   = "reply"
	ActionSend    = "send"
	ActionWebhook = "webhook"
	ActionConsent = "set_consent"
	ActionTag     = "tag"
)

// Action is one thing a rule does. Forward and send go to To (or every member of the list ToList)
// on Channel through Account; reply answers the sender on the channel and account the message came
// in on; webhook posts the event, signed; set_consent and tag change the event's subject.
type Action struct {
	Kind     string
	Path     string
	Channel  gateway.Channel // forward, send
	Account  string          // forward, send: after Validate always set (the channel's first account by default)
	To       gateway.Address // forward, send
	ToList   string          // send: the name of a contact list (TenantConfig.Lists) instead of To
	List     []gateway.Address
	Template *template.Template
	Source   string // the template text as written
	ToLine   int    // line of to: in the file

	Webhook *WebhookAction
	// ConsentState (set_consent) is opted_in or opted_out; ConsentCategory "" (all), marketing or utility.
	ConsentState    string
	ConsentCategory string
	AddTags         []string // tag
	RemoveTags      []string // tag
}

// WebhookAction posts the event to URL, signed with the whsec_ secret in the environment
// variable SecretEnv (Standard Webhooks, as pipeline/delivery does).
type WebhookAction struct {
	URL          string
	SecretEnv    string
	AllowPrivate bool
}

// ContactList is a named list of recipients (send.to_list).
type ContactList struct {
	Line    int
	Members []gateway.Address
}

// NamedTemplate is a named message text (send.template_name).
type NamedTemplate struct {
	Line     int
	Source   string
	Template *template.Template
}

// TemplateData is what an automation template sees: {{.Text}}, {{.From.Masked}} …
type TemplateData struct {
	Text     string
	From     TemplateAddress
	FromName string
	Channel  string
	Account  string
	Chat     string
	Rule     string
	At       time.Time
	// Hook is the JSON body of a hook call ({{.Hook.order_id}}); nil for other triggers.
	Hook map[string]any
	// Status is the status change of a status rule; zero for other triggers.
	Status TemplateStatus
}

// TemplateStatus is a status change in a template: {{.Status.MessageID}} {{.Status.Status}} …
type TemplateStatus struct {
	MessageID string
	Status    string
	ErrorCode string
	To        string // the recipient, masked
}

// TemplateAddress is an address in a template: {{.From.Masked}} or, in full, {{.From.Address}}.
type TemplateAddress struct {
	Address string
	Masked  string
}

// TemplateFuncs are the helpers every automation template may use, and the only ones.
func TemplateFuncs() template.FuncMap {
	return template.FuncMap{
		"upper": strings.ToUpper,
		"lower": strings.ToLower,
		"trim":  strings.TrimSpace,
		"truncate": func(n int, s string) string {
			r := []rune(s)
			if n < 0 || len(r) <= n {
				return s
			}
			return string(r[:n]) + "…"
		},
		"default": func(def, s string) string {
			if strings.TrimSpace(s) == "" {
				return def
			}
			return s
		},
		"replace": func(old, new, s string) string { return strings.ReplaceAll(s, old, new) },
	}
}

// ConditionEnv is what an automation condition sees: `channel == "whatsapp" and "vip" in contact.tags`.
type ConditionEnv struct {
	Text     string           `expr:"text"`
	From     string           `expr:"from"` // masked
	FromName string           `expr:"from_name"`
	Channel  string           `expr:"channel"`
	Account  string           `expr:"account"`
	Chat     string           `expr:"chat"`
	Hour     int              `expr:"hour"`    // 0–23, UTC
	Weekday  string           `expr:"weekday"` // Monday …
	Hops     int              `expr:"hops"`
	Contact  ConditionContact `expr:"contact"`
	Event    string           `expr:"event"`      // inbound, status, hook or schedule
	Status   string           `expr:"status"`     // status rules: the new status
	Error    string           `expr:"error_code"` // status rules: the error code of a failure
	Hook     map[string]any   `expr:"hook"`       // hook rules: the JSON body
}

// ConditionContact describes the sender in a condition.
type ConditionContact struct {
	Tags []string `expr:"tags"`
}

// CompileCondition compiles an automation condition: it must be a boolean over ConditionEnv.
// Besides expr's own `"vip" in contact.tags`, a list has the method form contact.tags.contains("vip").
func CompileCondition(src string) (*vm.Program, error) {
	return expr.Compile(src, expr.Env(ConditionEnv{}), expr.AsBool(), expr.MaxNodes(500), expr.Patch(containsMethod{}))
}

// containsMethod rewrites list.contains(x) into x in list.
type containsMethod struct{}

func (containsMethod) Visit(node *ast.Node) {
	call, ok := (*node).(*ast.CallNode)
	if !ok || len(call.Arguments) != 1 {
		return
	}
	m, ok := call.Callee.(*ast.MemberNode)
	if !ok {
		return
	}
	if prop, ok := m.Property.(*ast.StringNode); ok && prop.Value == "contains" {
		ast.Patch(node, &ast.BinaryNode{Operator: "in", Left: call.Arguments[0], Right: m.Node})
	}
}

// ParseTemplate parses an automation template with the fixed helper set and runs it once on
// sample data, so an unknown field is a configuration error rather than a runtime surprise.
func ParseTemplate(name, src string) (*template.Template, error) {
	t, err := template.New(name).Option("missingkey=error").Funcs(TemplateFuncs()).Parse(src)
	if err != nil {
		return nil, err
	}
	sample := TemplateData{Text: "sample", From: TemplateAddress{Address: "+4915100000000", Masked: "+49******0000"}, Channel: "whatsapp", Account: "a", Rule: "r", At: time.Unix(0, 0),
		Hook: hookSample(t.Tree.Root)}
	if err := t.Execute(io.Discard, sample); err != nil && !strings.Contains(err.Error(), "<.Hook.") {
		return nil, err // a hook body's values are known only when it is called
	}
	return t, nil
}

// hookSample is a hook body holding every .Hook field the template reads, so the check run on
// sample data goes on past them to the rest of the template.
func hookSample(root *tparse.ListNode) map[string]any {
	sample := map[string]any{}
	var walk func(n tparse.Node)
	walk = func(n tparse.Node) {
		switch n := n.(type) {
		case *tparse.ListNode:
			if n != nil {
				for _, c := range n.Nodes {
					walk(c)
				}
			}
		case *tparse.ActionNode:
			walk(n.Pipe)
		case *tparse.PipeNode:
			if n != nil {
				for _, c := range n.Cmds {
					walk(c)
				}
			}
		case *tparse.CommandNode:
			for _, a := range n.Args {
				walk(a)
			}
		case *tparse.IfNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *tparse.RangeNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *tparse.WithNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *tparse.FieldNode:
			if len(n.Ident) < 2 || n.Ident[0] != "Hook" {
				return
			}
			m := sample
			for _, k := range n.Ident[1 : len(n.Ident)-1] {
				next, ok := m[k].(map[string]any)
				if !ok {
					next = map[string]any{}
					m[k] = next
				}
				m = next
			}
			if _, ok := m[n.Ident[len(n.Ident)-1]]; !ok {
				m[n.Ident[len(n.Ident)-1]] = "sample"
			}
		}
	}
	walk(root)
	return sample
}

// autoDecoder turns a tenant's raw automation nodes into Rules, reporting every problem at its line.
type autoDecoder struct {
	c    *Config
	r    *report
	t    *TenantConfig
	file string
}

func (d *autoDecoder) fail(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.r.at(d.file, line, path, format, args...)
}

// fields checks that n is a mapping with only the allowed keys and returns key → value.
func (d *autoDecoder) fields(n *yaml.Node, path string, allowed ...string) (map[string]*yaml.Node, bool) {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping (key: value), not %s", nodeDesc(n))
		return nil, false
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		if !contains(allowed, k.Value) {
			d.fail(k, joinPath(path, k.Value), "unknown key %q: use %s", k.Value, joinOr(allowed))
			continue
		}
		if _, dup := out[k.Value]; dup {
			d.fail(k, joinPath(path, k.Value), "set twice")
			continue
		}
		out[k.Value] = v
	}
	return out, true
}

func (d *autoDecoder) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.fail(n, path, "must be a string, not %s", nodeDesc(n))
		return "", false
	}
	return n.Value, true
}

// strs accepts a string or a list of strings.
func (d *autoDecoder) strs(n *yaml.Node, path string) ([]string, bool) {
	if n.Kind == yaml.ScalarNode {
		s, ok := d.str(n, path)
		return []string{s}, ok
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "must be a string or a list of strings, not %s", nodeDesc(n))
		return nil, false
	}
	var out []string
	ok := true
	for i, e := range n.Content {
		s, good := d.str(resolveAlias(e), indexPath(path, i))
		ok = ok && good
		out = append(out, s)
	}
	return out, ok
}

func (d *autoDecoder) channel(n *yaml.Node, path string) (gateway.Channel, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	ch := gateway.Channel(s)
	if !ch.Valid() {
		d.fail(n, path, "unknown channel %q: use whatsapp or teams", s)
		return "", false
	}
	if d.t.Channel(ch) == nil {
		d.fail(n, path, "channel %s is not configured for tenant %s", s, d.t.ID)
		return "", false
	}
	return ch, true
}

func (d *autoDecoder) account(n *yaml.Node, path string, ch gateway.Channel) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if d.t.Channel(ch).Account(s) == nil {
		var names []string
		for _, a := range d.t.Channel(ch).Accounts {
			names = append(names, a.Name)
		}
		d.fail(n, path, "unknown %s account %q: use %s", ch, s, joinOr(names))
		return "", false
	}
	return s, true
}

func (d *autoDecoder) template(n *yaml.Node, path string) (*template.Template, string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return nil, "", false
	}
	t, err := ParseTemplate(path, s)
	if err != nil {
		msg := err.Error()
		msg = strings.NewReplacer("template: "+path+":", "", "executing \""+path+"\" ", "").Replace(msg)
		d.fail(n, path, "template does not work: %s (fields: .Text .From.Masked .From.Address .FromName .Channel .Account .Chat .Rule .At .Hook.<field> .Status.MessageID .Status.Status .Status.ErrorCode .Status.To; helpers: upper lower trim truncate default replace)", msg)
		return nil, "", false
	}
	return t, s, true
}

// decodeAutomations types and checks t.Automations into t.Rules.
func decodeAutomations(c *Config, r *report, t *TenantConfig, tenantPath string) {
	t.Rules = nil
	d := &autoDecoder{c: c, r: r, t: t, file: c.loc.file}
	d.named(tenantPath)
	names := map[string]string{}
	for i := range t.Automations {
		n := resolveAlias(&t.Automations[i])
		p := indexPath(tenantPath+".automations", i)
		f, ok := d.fields(n, p, "name", "when", "if", "do")
		if !ok {
			continue
		}
		a := Automation{Line: n.Line, Path: p}
		good := true
		if v, ok := f["name"]; !ok {
			d.fail(n, p+".name", "missing: every automation needs a name, e.g. name: invoices-to-finance")
			good = false
		} else if s, ok := d.str(v, p+".name"); ok {
			if !validName(s) {
				d.fail(v, p+".name", "invalid name %q: use 1 to 32 of a-z, 0-9, _ and -", s)
				good = false
			} else if prev, dup := names[s]; dup {
				d.fail(v, p+".name", "duplicate automation name %q: %s already uses it", s, prev)
				good = false
			} else {
				names[s] = fmt.Sprintf("%s (line %d)", p, n.Line)
				a.Name = s
			}
		} else {
			good = false
		}
		if v, ok := f["when"]; !ok {
			d.fail(n, p+".when", "missing: say when the rule runs, e.g. when: {inbound: {channel: whatsapp}}")
			good = false
		} else if !d.when(v, p+".when", &a) {
			good = false
		}
		if v, ok := f["if"]; ok {
			if s, ok := d.str(v, p+".if"); ok {
				prog, err := CompileCondition(s)
				if err != nil {
					d.fail(v, p+".if", "condition does not compile: %s (variables: event text from from_name channel account chat hour weekday hops contact.tags status error_code hook)", firstLine(err.Error()))
					good = false
				} else {
					a.If, a.IfProg = s, prog
				}
			} else {
				good = false
			}
		}
		if v, ok := f["do"]; !ok {
			d.fail(n, p+".do", "missing: list what the rule does, e.g. do: [{reply: {text: Thanks}}]")
			good = false
		} else if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
			d.fail(v, p+".do", "must be a non-empty list of actions")
			good = false
		} else {
			for j, an := range v.Content {
				act, ok := d.action(resolveAlias(an), indexPath(p+".do", j), a.Trigger())
				if !ok {
					good = false
					continue
				}
				a.Do = append(a.Do, act)
			}
		}
		if good {
			t.Rules = append(t.Rules, a)
		}
	}
	checkLoops(d, t)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func (d *autoDecoder) when(n *yaml.Node, p string, a *Automation) bool {
	f, ok := d.fields(n, p, "inbound", "schedule", "status", "hook")
	if !ok {
		return false
	}
	if len(f) > 1 {
		d.fail(n, p, "a rule has one trigger: inbound, schedule, status or hook")
		return false
	}
	if sn, ok := f["schedule"]; ok {
		a.Schedule = &ScheduleTrigger{}
		return d.schedule(sn, p+".schedule", a.Schedule)
	}
	if sn, ok := f["status"]; ok {
		a.Status = &StatusTrigger{}
		return d.status(sn, p+".status", a.Status)
	}
	if hn, ok := f["hook"]; ok {
		a.Hook = &HookTrigger{}
		return d.hook(hn, p+".hook", a.Hook)
	}
	in, ok := f["inbound"]
	if !ok {
		d.fail(n, p+".inbound", "missing: when: needs a trigger: inbound, schedule, status or hook, e.g. inbound: {channel: whatsapp}")
		return false
	}
	a.Inbound = &InboundTrigger{}
	tr := a.Inbound
	ip := p + ".inbound"
	g, ok := d.fields(in, ip, "channel", "account", "from", "chat", "text")
	if !ok {
		return false
	}
	good := true
	cn, ok := g["channel"]
	if !ok {
		d.fail(in, ip+".channel", "missing: whatsapp or teams")
		return false
	}
	if tr.Channel, ok = d.channel(cn, ip+".channel"); !ok {
		return false
	}
	if v, ok := g["account"]; ok {
		if tr.Account, ok = d.account(v, ip+".account", tr.Channel); !ok {
			good = false
		}
	}
	if v, ok := g["from"]; ok {
		froms, ok := d.strs(v, ip+".from")
		good = good && ok
		for i, s := range froms {
			addr, err := gateway.ParseAddress(tr.Channel, s)
			if err != nil {
				d.fail(v, indexPath(ip+".from", i), "%s", gateway.ErrorMessage(err))
				good = false
				continue
			}
			tr.From = append(tr.From, addr.String())
		}
	}
	if v, ok := g["chat"]; ok {
		if tr.Chat, ok = d.str(v, ip+".chat"); !ok {
			good = false
		}
	}
	if v, ok := g["text"]; ok {
		good = d.text(v, ip+".text", &tr.Text) && good
	}
	return good
}

// cronFields: the parser reads standard five-field cron expressions and descriptors (@daily, @every 1h).
const cronFields = cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor

func (d *autoDecoder) schedule(n *yaml.Node, p string, st *ScheduleTrigger) bool {
	f, ok := d.fields(n, p, "cron", "timezone")
	if !ok {
		return false
	}
	good := true
	st.Location = time.UTC
	if v, ok := f["timezone"]; ok {
		if st.Timezone, ok = d.str(v, p+".timezone"); ok {
			loc, err := time.LoadLocation(st.Timezone)
			if err != nil || st.Timezone == "" || st.Timezone == "Local" {
				d.fail(v, p+".timezone", "unknown time zone %q: use an IANA name such as Europe/Berlin or UTC", st.Timezone)
				good = false
			} else {
				st.Location = loc
			}
		} else {
			good = false
		}
	}
	v, ok := f["cron"]
	if !ok {
		d.fail(n, p+".cron", "missing: when it runs, e.g. cron: \"0 9 * * MON-FRI\"")
		return false
	}
	if st.Cron, ok = d.str(v, p+".cron"); !ok {
		return false
	}
	if strings.HasPrefix(strings.TrimSpace(st.Cron), "TZ=") || strings.HasPrefix(strings.TrimSpace(st.Cron), "CRON_TZ=") {
		d.fail(v, p+".cron", "put the time zone in timezone:, not in the expression")
		return false
	}
	spec, err := cron.NewParser(cronFields).Parse(st.Cron)
	if err != nil {
		d.fail(v, p+".cron", "invalid cron expression: %v (use minute hour day-of-month month day-of-week, e.g. \"0 9 * * MON-FRI\")", err)
		return false
	}
	st.Spec = spec
	return good
}

func (d *autoDecoder) text(n *yaml.Node, p string, m *TextMatch) bool {
	f, ok := d.fields(n, p, "equals", "contains_any", "regex", "keyword")
	if !ok {
		return false
	}
	if len(f) == 0 {
		d.fail(n, p, "empty: use equals, contains_any, regex or keyword")
		return false
	}
	good := true
	if v, ok := f["equals"]; ok {
		m.Equals, ok = d.str(v, p+".equals")
		good = good && ok
	}
	if v, ok := f["contains_any"]; ok {
		words, ok := d.strs(v, p+".contains_any")
		good = good && ok
		for i, w := range words {
			if strings.TrimSpace(w) == "" {
				d.fail(v, indexPath(p+".contains_any", i), "empty word: remove it")
				good = false
				continue
			}
			m.ContainsAny = append(m.ContainsAny, strings.ToLower(w))
		}
	}
	if v, ok := f["regex"]; ok {
		if s, ok := d.str(v, p+".regex"); ok {
			re, err := regexp.Compile(s)
			if err != nil {
				d.fail(v, p+".regex", "invalid regular expression: %s", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
				good = false
			} else {
				m.Regex = re
			}
		} else {
			good = false
		}
	}
	if v, ok := f["keyword"]; ok {
		words, ok := d.strs(v, p+".keyword")
		good = good && ok
		for i, w := range words {
			w = strings.ToUpper(strings.TrimSpace(w))
			if w == "" || strings.IndexFunc(w, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) >= 0 {
				d.fail(v, indexPath(p+".keyword", i), "%q is not a single word", w)
				good = false
				continue
			}
			m.Keyword = append(m.Keyword, w)
		}
	}
	return good
}

// actionKinds are the action keys, in the order the messages name them.
var actionKinds = []string{ActionForward, ActionReply, ActionSend, ActionWebhook, ActionConsent, ActionTag}

// action types one action of a rule whose trigger is trigger (inbound, schedule, status, hook).
func (d *autoDecoder) action(n *yaml.Node, p string, trigger string) (Action, bool) {
	f, ok := d.fields(n, p, actionKinds...)
	if !ok {
		return Action{}, false
	}
	if len(f) == 0 && len(n.Content) > 0 {
		return Action{}, false // its unknown key is reported
	}
	if len(f) != 1 {
		d.fail(n, p, "an action is exactly one of %s", joinOr(actionKinds))
		return Action{}, false
	}
	var kind string
	var v *yaml.Node
	for k, x := range f {
		kind, v = k, x
	}
	ap := p + "." + kind
	a := Action{Kind: kind, Path: ap}
	switch {
	case (kind == ActionReply || kind == ActionForward) && trigger != "inbound":
		d.fail(v, ap, "a %s rule has no message to %s: use send", trigger, kind)
		return a, false
	case (kind == ActionConsent || kind == ActionTag) && (trigger == "schedule" || trigger == "hook"):
		d.fail(v, ap, "a %s rule has no contact to %s: use it in an inbound or status rule", trigger, kind)
		return a, false
	}
	switch kind {
	case ActionWebhook:
		return a, d.webhook(v, ap, &a)
	case ActionConsent:
		return a, d.setConsent(v, ap, &a)
	case ActionTag:
		return a, d.tag(v, ap, &a)
	}
	var g map[string]*yaml.Node
	switch kind {
	case ActionReply:
		g, ok = d.fields(v, ap, "text")
	case ActionForward:
		g, ok = d.fields(v, ap, "to", "account", "template")
	case ActionSend:
		g, ok = d.fields(v, ap, "channel", "to", "to_list", "account", "text", "template_name")
	}
	if !ok {
		return a, false
	}
	good := true
	tmplKey := "text"
	if kind == ActionForward {
		tmplKey = "template"
	}
	tv, hasText := g[tmplKey]
	nv, hasName := g["template_name"]
	switch {
	case hasText && hasName:
		d.fail(nv, ap+".template_name", "set text or template_name, not both")
		good = false
	case hasName:
		good = d.templateName(nv, ap+".template_name", &a) && good
	case hasText:
		if a.Template, a.Source, ok = d.template(tv, ap+"."+tmplKey); !ok {
			good = false
		}
	case kind == ActionForward:
		a.Template, a.Source, _ = d.template(&yaml.Node{Kind: yaml.ScalarNode, Value: "{{.Text}}"}, ap+".template")
	case kind == ActionSend:
		d.fail(v, ap+".text", "missing: the text to send (a template: {{.Text}} …) or template_name: the name of one of the tenant's templates")
		good = false
	default:
		d.fail(v, ap+".text", "missing: the text to send (a template: {{.Text}}, {{.From.Masked}} …)")
		good = false
	}
	if kind == ActionReply {
		return a, good
	}
	// Where it goes.
	tn, hasTo := g["to"]
	ln, hasList := g["to_list"]
	switch {
	case hasTo && hasList:
		d.fail(ln, ap+".to_list", "set to or to_list, not both")
		return a, false
	case !hasTo && !hasList:
		d.fail(v, ap+".to", "missing: the recipient, e.g. +4915112345678 or teams:channel:<team>/<channel> (or to_list: the name of a contact list)")
		return a, false
	}
	var to string
	if hasTo {
		a.ToLine = tn.Line
		if to, ok = d.str(tn, ap+".to"); !ok {
			return a, false
		}
	}
	if cn, ok := g["channel"]; ok {
		if a.Channel, ok = d.channel(cn, ap+".channel"); !ok {
			return a, false
		}
	} else if kind == ActionSend {
		d.fail(v, ap+".channel", "missing: whatsapp or teams")
		return a, false
	} else if strings.HasPrefix(to, "teams:") {
		a.Channel = gateway.Teams
	} else {
		a.Channel = gateway.WhatsApp
	}
	if d.t.Channel(a.Channel) == nil {
		d.fail(tn, ap+".to", "channel %s is not configured for tenant %s", a.Channel, d.t.ID)
		return a, false
	}
	if hasTo {
		addr, err := gateway.ParseAddress(a.Channel, to)
		if err != nil {
			d.fail(tn, ap+".to", "%s", gateway.ErrorMessage(err))
			good = false
		}
		a.To = addr
	} else {
		good = d.toList(ln, ap+".to_list", &a) && good
	}
	if an, ok := g["account"]; ok {
		if a.Account, ok = d.account(an, ap+".account", a.Channel); !ok {
			good = false
		}
	} else if cc := d.t.Channel(a.Channel); len(cc.Accounts) > 0 {
		a.Account = cc.Accounts[0].Name
	}
	return a, good
}

func (d *autoDecoder) templateName(n *yaml.Node, p string, a *Action) bool {
	name, ok := d.str(n, p)
	if !ok {
		return false
	}
	nt, found := d.t.Named.Templates[name]
	if !found {
		d.fail(n, p, "unknown template %q: use %s (the tenant's templates:)", name, joinOr(sortedKeys(d.t.Named.Templates)))
		return false
	}
	if nt.Template == nil {
		return false // its own problem is reported at its line
	}
	a.Template, a.Source = nt.Template, nt.Source
	return true
}

func (d *autoDecoder) toList(n *yaml.Node, p string, a *Action) bool {
	name, ok := d.str(n, p)
	if !ok {
		return false
	}
	l, found := d.t.Named.Lists[name]
	if !found {
		d.fail(n, p, "unknown contact list %q: use %s (the tenant's lists:)", name, joinOr(sortedKeys(d.t.Named.Lists)))
		return false
	}
	for _, m := range l.Members {
		if m.Channel != a.Channel {
			d.fail(n, p, "contact list %s (line %d) holds %s recipients: this send is on %s", name, l.Line, m.Channel, a.Channel)
			return false
		}
	}
	a.ToList, a.List = name, l.Members
	return true
}

func (d *autoDecoder) webhook(n *yaml.Node, p string, a *Action) bool {
	g, ok := d.fields(n, p, "url", "secret_env", "allow_private")
	if !ok {
		return false
	}
	w := &WebhookAction{}
	good := true
	if v, ok := g["url"]; !ok {
		d.fail(n, p+".url", "missing: where to post, e.g. https://ops.example.com/hook")
		good = false
	} else if w.URL, ok = d.str(v, p+".url"); ok {
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			d.fail(v, p+".url", "want an http(s) URL without credentials, e.g. https://ops.example.com/hook")
			good = false
		}
	} else {
		good = false
	}
	if v, ok := g["secret_env"]; !ok {
		d.fail(n, p+".secret_env", "missing: the environment variable holding the signing secret (whsec_…; `switchboard webhooks secret` makes one)")
		good = false
	} else if w.SecretEnv, ok = d.str(v, p+".secret_env"); ok && !validEnvName(w.SecretEnv) {
		d.fail(v, p+".secret_env", "must be the name of an environment variable (e.g. OPS_HOOK_SECRET), not the secret itself")
		good = false
	} else if !ok {
		good = false
	}
	if v, ok := g["allow_private"]; ok {
		if v.Kind != yaml.ScalarNode || (v.Value != "true" && v.Value != "false") {
			d.fail(v, p+".allow_private", "must be true or false")
			good = false
		}
		w.AllowPrivate = v.Value == "true"
	}
	a.Webhook = w
	return good
}

func (d *autoDecoder) setConsent(n *yaml.Node, p string, a *Action) bool {
	g, ok := d.fields(n, p, "state", "category")
	if !ok {
		return false
	}
	v, ok := g["state"]
	if !ok {
		d.fail(n, p+".state", "missing: opt_in or opt_out")
		return false
	}
	s, ok := d.str(v, p+".state")
	if !ok {
		return false
	}
	switch s {
	case "opt_in":
		a.ConsentState = "opted_in"
	case "opt_out":
		a.ConsentState = "opted_out"
	default:
		d.fail(v, p+".state", "unknown state %q: use opt_in or opt_out", s)
		return false
	}
	if v, ok := g["category"]; ok {
		if a.ConsentCategory, ok = d.str(v, p+".category"); !ok {
			return false
		}
		if a.ConsentCategory != "marketing" && a.ConsentCategory != "utility" {
			d.fail(v, p+".category", "unknown category %q: use marketing or utility, or leave it out for all", a.ConsentCategory)
			return false
		}
	}
	return true
}

func (d *autoDecoder) tag(n *yaml.Node, p string, a *Action) bool {
	g, ok := d.fields(n, p, "add", "remove")
	if !ok {
		return false
	}
	if len(g) == 0 {
		d.fail(n, p, "empty: use add: [tags] and/or remove: [tags]")
		return false
	}
	good := true
	for _, k := range []string{"add", "remove"} {
		v, ok := g[k]
		if !ok {
			continue
		}
		tags, ok := d.strs(v, p+"."+k)
		good = good && ok
		for i, tag := range tags {
			if !validName(tag) {
				d.fail(v, indexPath(p+"."+k, i), "invalid tag %q: use 1 to 32 of a-z, 0-9, _ and -", tag)
				good = false
				continue
			}
			if k == "add" {
				a.AddTags = append(a.AddTags, tag)
			} else {
				a.RemoveTags = append(a.RemoveTags, tag)
			}
		}
	}
	return good
}

func (d *autoDecoder) status(n *yaml.Node, p string, st *StatusTrigger) bool {
	f, ok := d.fields(n, p, "in", "channel", "account")
	if !ok {
		return false
	}
	good := true
	v, ok := f["in"]
	if !ok {
		d.fail(n, p+".in", "missing: the statuses that start the rule, e.g. in: [failed, rejected]")
		return false
	}
	names, ok := d.strs(v, p+".in")
	good = good && ok
	for i, s := range names {
		status := gateway.Status(s)
		if !status.Valid() || status == gateway.StatusAccepted {
			d.fail(v, indexPath(p+".in", i), "unknown status %q: use queued, sent, delivered, read, played, failed or rejected", s)
			good = false
			continue
		}
		st.In = append(st.In, status)
	}
	if cn, ok := f["channel"]; ok {
		if st.Channel, ok = d.channel(cn, p+".channel"); !ok {
			return false
		}
	}
	if an, ok := f["account"]; ok {
		if st.Channel == "" {
			d.fail(an, p+".account", "an account needs channel: too")
			return false
		}
		if st.Account, ok = d.account(an, p+".account", st.Channel); !ok {
			good = false
		}
	}
	return good
}

func (d *autoDecoder) hook(n *yaml.Node, p string, h *HookTrigger) bool {
	f, ok := d.fields(n, p, "name")
	if !ok {
		return false
	}
	v, ok := f["name"]
	if !ok {
		d.fail(n, p+".name", "missing: the hook's name, called as POST /v1/hooks/<name>")
		return false
	}
	if h.Name, ok = d.str(v, p+".name"); !ok {
		return false
	}
	if !validName(h.Name) {
		d.fail(v, p+".name", "invalid hook name %q: use 1 to 32 of a-z, 0-9, _ and -", h.Name)
		return false
	}
	return true
}

// named types the tenant's contact lists and templates (lists:, templates:) into t.Named.
func (d *autoDecoder) named(tenantPath string) {
	d.t.Named = Named{Lists: map[string]ContactList{}, Templates: map[string]NamedTemplate{}}
	if n := resolveAlias(&d.t.Lists); n.Kind != 0 && !isNull(n) {
		p := tenantPath + ".lists"
		if f, ok := d.namedFields(n, p); ok {
			for _, k := range f {
				lp := joinPath(p, k.key)
				l := ContactList{Line: k.node.Line}
				members, _ := d.strs(k.node, lp)
				for i, m := range members {
					ch := gateway.WhatsApp
					if strings.HasPrefix(m, "teams:") {
						ch = gateway.Teams
					}
					addr, err := gateway.ParseAddress(ch, m)
					if err != nil {
						d.fail(k.node, indexPath(lp, i), "%s", gateway.ErrorMessage(err))
						continue
					}
					l.Members = append(l.Members, addr)
				}
				d.t.Named.Lists[k.key] = l
			}
		}
	}
	if n := resolveAlias(&d.t.Templates); n.Kind != 0 && !isNull(n) {
		p := tenantPath + ".templates"
		if f, ok := d.namedFields(n, p); ok {
			for _, k := range f {
				nt := NamedTemplate{Line: k.node.Line}
				nt.Template, nt.Source, _ = d.template(k.node, joinPath(p, k.key))
				d.t.Named.Templates[k.key] = nt
			}
		}
	}
}

type namedNode struct {
	key  string
	node *yaml.Node
}

// namedFields reads a mapping of names (valid names, each once) to values.
func (d *autoDecoder) namedFields(n *yaml.Node, p string) ([]namedNode, bool) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, p, "must be a mapping of names to values, not %s", nodeDesc(n))
		return nil, false
	}
	var out []namedNode
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		switch {
		case !validName(k.Value):
			d.fail(k, joinPath(p, k.Value), "invalid name %q: use 1 to 32 of a-z, 0-9, _ and -", k.Value)
		case seen[k.Value]:
			d.fail(k, joinPath(p, k.Value), "set twice")
		default:
			seen[k.Value] = true
			out = append(out, namedNode{k.Value, v})
		}
	}
	return out, true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) == 0 {
		return []string{"(none defined)"}
	}
	return keys
}

// checkLoops reports forwarding loops that the rules show statically: rule A sends to an address
// whose answer would trigger rule B (same channel and account, B's from filter letting it through),
// and so on back to A. The hop limit stops such loops at run time too; this says so up front.
func checkLoops(d *autoDecoder, t *TenantConfig) {
	rules := t.Rules
	type edge struct{ to, action int }
	next := make([][]edge, len(rules))
	for i, a := range rules {
		for ai, act := range a.Do {
			if act.Kind == ActionReply || act.To.IsZero() {
				continue
			}
			for j, b := range rules {
				if b.Inbound != nil && triggersOn(*b.Inbound, act) {
					next[i] = append(next[i], edge{j, ai})
				}
			}
		}
	}
	reported := map[int]bool{}
	for start := range rules {
		// Depth-first search for a path back to start.
		type frame struct {
			rule int
			via  []edge
		}
		seen := map[int]bool{}
		stack := []frame{{rule: start}}
		for len(stack) > 0 {
			f := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			for _, e := range next[f.rule] {
				via := append(append([]edge(nil), f.via...), edge{e.to, e.action})
				if e.to == start {
					if reported[start] {
						continue
					}
					cycle := []string{rules[start].Name}
					for _, x := range via {
						cycle = append(cycle, rules[x.to].Name)
					}
					first := rules[start].Do[via[0].action]
					for _, x := range via[:len(via)-1] {
						reported[x.to] = true
					}
					reported[start] = true
					d.r.at(d.file, first.ToLine, first.Path+".to",
						"forwarding loop: %s; the answer from %s triggers the rules again. Narrow a trigger (from, chat, text) so the loop cannot close",
						strings.Join(cycle, " → "), first.To.Masked())
					continue
				}
				if !seen[e.to] {
					seen[e.to] = true
					stack = append(stack, frame{rule: e.to, via: via})
				}
			}
		}
	}
}

// triggersOn reports whether the answer of act's recipient could start a rule with trigger tr.
func triggersOn(tr InboundTrigger, act Action) bool {
	if m := tr.Text; m.Equals != "" || len(m.ContainsAny) > 0 || m.Regex != nil || len(m.Keyword) > 0 {
		return false // a text filter may well stop the echo; the hop limit stops it if not
	}
	if tr.Channel != act.Channel || (tr.Account != "" && tr.Account != act.Account) {
		return false
	}
	if len(tr.From) > 0 && !contains(tr.From, act.To.String()) {
		return false
	}
	if tr.Chat != "" && tr.Chat != act.To.Value && tr.Chat != act.To.String() {
		return false
	}
	return true
}
