package config

import (
	"strings"
	"testing"
)

const automationBase = `
data_dir: /tmp/x
tenants:
  - id: acme
    channels:
      whatsapp:
        accounts: [{name: sales, driver: sandbox}]
      teams:
        accounts: [{name: ops, driver: sandbox}]
    automations:
`

func TestAutomationsValid(t *testing.T) {
	c, err := Parse("a.yaml", []byte(automationBase+`
      - name: invoices-to-finance
        when: {inbound: {channel: whatsapp, text: {contains_any: [invoice, factura]}}}
        if: 'not contact.tags.contains("vip")'
        do:
          - forward: {to: "teams:channel:team1/chan1", template: "WhatsApp {{.From.Masked}}: {{.Text}}"}
          - reply:   {text: "Thanks, Finance will answer within a day."}
      - name: help
        when: {inbound: {channel: teams, account: ops, text: {keyword: [hilfe], regex: "(?i)^h"}}}
        do: [{send: {channel: whatsapp, to: "+4915112345678", text: "{{upper .Text}}"}}]
      - name: weekday-reminder
        when: {schedule: {cron: "0 9 * * MON-FRI", timezone: Europe/Berlin}}
        do: [{send: {channel: whatsapp, to: "+4915112345678", text: "Reminder"}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	rules := c.Tenant("acme").Rules
	if len(rules) != 3 {
		t.Fatalf("rules = %d, want 3", len(rules))
	}
	if s := rules[2].Schedule; s == nil || s.Location.String() != "Europe/Berlin" || s.Spec == nil {
		t.Fatalf("schedule = %+v", s)
	}
	fw := rules[0].Do[0]
	if fw.Kind != ActionForward || fw.Channel != "teams" || fw.Account != "ops" || fw.To.String() != "teams:channel:team1/chan1" {
		t.Fatalf("forward = %+v", fw)
	}
	if rules[1].Inbound.Text.Keyword[0] != "HILFE" || rules[1].IfProg != nil {
		t.Fatalf("rule 2 = %+v", rules[1])
	}
}

// TestAutomationsTenMistakes: ten distinct mistakes give ten file:line problems.
func TestAutomationsTenMistakes(t *testing.T) {
	src := automationBase + `
      - name: a1
        when: {inbound: {channel: whatsapp, colour: red}}
        do: [{reply: {text: hi}}]
      - name: a2
        when: {inbound: {channel: whatsapp, text: {contains_any: {x: 1}}}}
        do: [{reply: {text: hi}}]
      - name: a3
        when: {inbound: {channel: whatsapp, text: {regex: "inv(oice"}}}
        do: [{reply: {text: hi}}]
      - name: a4
        when: {inbound: {channel: whatsapp, account: marketing}}
        do: [{reply: {text: hi}}]
      - name: a5
        when: {inbound: {channel: whatsapp}}
        do: [{reply: {text: "{{.Txt}}"}}]
      - name: a6
        when: {inbound: {channel: whatsapp}}
        if: 'text ==== 1'
        do: [{reply: {text: hi}}]
      - name: a7
        when: {inbound: {channel: whatsapp}}
        do: [{forward: {to: "teams:channel:t/c", template: "{{.Text"}}]
      - name: a8
        when: {inbound: {channel: telegram}}
        do: [{reply: {text: hi}}]
      - name: a9
        when: {inbound: {channel: teams}}
        do: [{launch: {rocket: true}}]
      - name: loop-a
        when: {inbound: {channel: whatsapp, from: "+4915112345678"}}
        do: [{forward: {to: "teams:chat:19:abc@thread.v2"}}]
      - name: loop-b
        when: {inbound: {channel: teams, chat: "19:abc@thread.v2", account: ops}}
        do: [{forward: {to: "+4915112345678"}}]
`
	_, err := Parse("bad.yaml", []byte(src))
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.(interface{ Unwrap() error }).Unwrap().Error(), "\n")
	want := []string{
		"bad.yaml:13: tenants[0].automations[0].when.inbound.colour: unknown key",
		"bad.yaml:16: tenants[0].automations[1].when.inbound.text.contains_any: must be a string or a list",
		"bad.yaml:19: tenants[0].automations[2].when.inbound.text.regex: invalid regular expression",
		"bad.yaml:22: tenants[0].automations[3].when.inbound.account: unknown whatsapp account \"marketing\"",
		"bad.yaml:26: tenants[0].automations[4].do[0].reply.text: template does not work",
		"bad.yaml:29: tenants[0].automations[5].if: condition does not compile",
		"bad.yaml:33: tenants[0].automations[6].do[0].forward.template: template does not work",
		"bad.yaml:35: tenants[0].automations[7].when.inbound.channel: unknown channel \"telegram\"",
		"bad.yaml:39: tenants[0].automations[8].do[0].launch: unknown key",
		"bad.yaml:42: tenants[0].automations[9].do[0].forward.to: forwarding loop: loop-a → loop-b → loop-a",
	}
	wantProblems(t, lines, want)
}

func TestAutomationsRefused(t *testing.T) {
	tests := []struct{ name, rule, want string }{
		{"status reply", `{name: s, when: {status: {in: [failed]}}, do: [{reply: {text: x}}]}`, "do[0].reply: a status rule has no message to reply"},
		{"status unknown", `{name: s, when: {status: {in: [lost]}}, do: [{send: {channel: whatsapp, to: "+4915112345678", text: x}}]}`, "when.status.in[0]: unknown status \"lost\""},
		{"status no in", `{name: s, when: {status: {channel: whatsapp}}, do: [{send: {channel: whatsapp, to: "+4915112345678", text: x}}]}`, "when.status.in: missing"},
		{"hook name", `{name: s, when: {hook: {name: "Bad Name"}}, do: [{send: {channel: whatsapp, to: "+4915112345678", text: x}}]}`, "when.hook.name: invalid hook name"},
		{"hook template", `{name: s, when: {hook: {name: h}}, do: [{send: {channel: whatsapp, to: "+4915112345678", text: "{{.Hook.order.id}} {{if .Hook.paid}}{{.Nope}}{{end}}"}}]}`, "do[0].send.text: template does not work: 1:38: at <.Nope>"},
		{"hook tag", `{name: s, when: {hook: {name: h}}, do: [{tag: {add: [x]}}]}`, "do[0].tag: a hook rule has no contact to tag"},
		{"scheduled consent", `{name: s, when: {schedule: {cron: "0 9 * * *"}}, do: [{set_consent: {state: opt_out}}]}`, "do[0].set_consent: a schedule rule has no contact"},
		{"scheduled reply", `{name: s, when: {schedule: {cron: "0 9 * * *"}}, do: [{reply: {text: x}}]}`, "do[0].reply: a schedule rule has no message to reply"},
		{"bad cron", `{name: s, when: {schedule: {cron: "0 25 * * *"}}, do: [{send: {channel: whatsapp, to: "+4915112345678", text: x}}]}`, "when.schedule.cron: invalid cron expression"},
		{"bad zone", `{name: s, when: {schedule: {cron: "0 9 * * *", timezone: Mars/Olympus}}, do: [{send: {channel: whatsapp, to: "+4915112345678", text: x}}]}`, "when.schedule.timezone: unknown time zone"},
		{"two triggers", `{name: s, when: {schedule: {cron: "0 9 * * *"}, inbound: {channel: teams}}, do: [{send: {channel: whatsapp, to: "+4915112345678", text: x}}]}`, "one trigger"},
		{"webhook no secret", `{name: w, when: {inbound: {channel: teams}}, do: [{webhook: {url: "https://x"}}]}`, "do[0].webhook.secret_env: missing"},
		{"webhook secret inline", `{name: w, when: {inbound: {channel: teams}}, do: [{webhook: {url: "https://x", secret_env: "whsec_abc+="}}]}`, "do[0].webhook.secret_env: must be the name of an environment variable"},
		{"webhook url", `{name: w, when: {inbound: {channel: teams}}, do: [{webhook: {url: "ftp://x", secret_env: S}}]}`, "do[0].webhook.url: want an http(s) URL"},
		{"consent state", `{name: w, when: {inbound: {channel: teams}}, do: [{set_consent: {state: maybe}}]}`, "do[0].set_consent.state: unknown state \"maybe\""},
		{"tag name", `{name: w, when: {inbound: {channel: teams}}, do: [{tag: {add: ["V I P"]}}]}`, "do[0].tag.add[0]: invalid tag"},
		{"unknown list", `{name: w, when: {inbound: {channel: teams}}, do: [{send: {channel: whatsapp, to_list: nobody, text: x}}]}`, "do[0].send.to_list: unknown contact list \"nobody\""},
		{"unknown template", `{name: w, when: {inbound: {channel: teams}}, do: [{send: {channel: whatsapp, to: "+4915112345678", template_name: nothing}}]}`, "do[0].send.template_name: unknown template \"nothing\""},
		{"to and list", `{name: w, when: {inbound: {channel: teams}}, do: [{send: {channel: whatsapp, to: "+4915112345678", to_list: x, text: x}}]}`, "do[0].send.to_list: set to or to_list, not both"},
		{"two actions", `{name: w, when: {inbound: {channel: teams}}, do: [{reply: {text: x}, send: {}}]}`, "exactly one of"},
		{"no name", `{when: {inbound: {channel: teams}}, do: [{reply: {text: x}}]}`, "name: missing"},
		{"bad to", `{name: w, when: {inbound: {channel: teams}}, do: [{forward: {to: "+1"}}]}`, "forward.to:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(automationBase+"      - "+tt.rule+"\n"))
			if err == nil || !strings.Contains(err.Error()+errString(err), tt.want) {
				t.Fatalf("err = %v, want %q", errString(err), tt.want)
			}
		})
	}
}

func errString(err error) string {
	if u, ok := err.(interface{ Unwrap() error }); ok && u.Unwrap() != nil {
		return u.Unwrap().Error()
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

const namedBase = `
data_dir: /tmp/x
tenants:
  - id: acme
    channels:
      whatsapp:
        accounts: [{name: sales, driver: sandbox}]
      teams:
        accounts: [{name: ops, driver: sandbox}]
    lists:
      reminders: ["+4915112345678", "+49 151 12345679"]
      ops: ["teams:channel:team1/chan1"]
    templates:
      reminder: "Good morning! Your appointment is today ({{.At.Weekday}})."
      failure: "Message {{.Status.MessageID}} {{.Status.Status}}: {{.Status.ErrorCode}}"
    automations:
`

func TestAutomationsNewTriggersAndActions(t *testing.T) {
	c, err := Parse("a.yaml", []byte(namedBase+`
      - name: weekday-reminder
        when: {schedule: {cron: "0 9 * * MON-FRI", timezone: Europe/Berlin}}
        do: [{send: {channel: whatsapp, to_list: reminders, template_name: reminder}}]
      - name: failures-to-ops
        when: {status: {in: [failed, rejected], channel: whatsapp, account: sales}}
        if: 'error_code != "recipient_opted_out"'
        do:
          - webhook: {url: "https://ops.example.com/hook", secret_env: OPS_HOOK_SECRET}
          - send: {channel: teams, to_list: ops, template_name: failure}
          - tag: {add: [unreachable]}
      - name: order-shipped
        when: {hook: {name: order-shipped}}
        if: 'hook.total > 100'
        do: [{send: {channel: whatsapp, to: "+4915112345678", text: "Order {{.Hook.order_id}} is on its way"}}]
      - name: remind-me
        when: {inbound: {channel: whatsapp, text: {keyword: remind}}}
        do:
          - set_consent: {state: opt_in, category: utility}
          - tag: {add: [reminders], remove: [unreachable]}
          - webhook: {url: "http://127.0.0.1:9/x", secret_env: LOCAL_SECRET, allow_private: true}
`))
	if err != nil {
		t.Fatal(errString(err))
	}
	rules := c.Tenant("acme").Rules
	if len(rules) != 4 {
		t.Fatalf("rules = %d", len(rules))
	}
	send := rules[0].Do[0]
	if send.ToList != "reminders" || len(send.List) != 2 || send.List[1].String() != "+4915112345679" || send.Template == nil {
		t.Fatalf("to_list send = %+v", send)
	}
	st := rules[1].Status
	if st == nil || len(st.In) != 2 || st.In[0] != "failed" || st.Account != "sales" || rules[1].Trigger() != "status" {
		t.Fatalf("status trigger = %+v", st)
	}
	if w := rules[1].Do[0].Webhook; w == nil || w.SecretEnv != "OPS_HOOK_SECRET" || w.AllowPrivate {
		t.Fatalf("webhook = %+v", w)
	}
	if rules[2].Hook == nil || rules[2].Hook.Name != "order-shipped" {
		t.Fatalf("hook = %+v", rules[2].Hook)
	}
	in := rules[3].Do
	if in[0].ConsentState != "opted_in" || in[0].ConsentCategory != "utility" || in[1].AddTags[0] != "reminders" ||
		in[1].RemoveTags[0] != "unreachable" || !in[2].Webhook.AllowPrivate {
		t.Fatalf("inbound actions = %+v", in)
	}
}

func TestAutomationsNamedMistakes(t *testing.T) {
	src := strings.Replace(namedBase, `"+49 151 12345679"`, `"+1"`, 1)
	src = strings.Replace(src, `{{.Status.ErrorCode}}`, `{{.Nope}}`, 1)
	_, err := Parse("n.yaml", []byte(src+`
      - name: r
        when: {schedule: {cron: "0 9 * * *"}}
        do: [{send: {channel: whatsapp, to_list: ops, text: x}}]
`))
	lines := strings.Split(errString(err), "\n")
	want := []string{
		"n.yaml:11: tenants[0].lists.reminders[1]: ****** is not a valid phone number",
		"n.yaml:15: tenants[0].templates.failure: template does not work",
		"n.yaml:20: tenants[0].automations[0].do[0].send.to_list: contact list ops (line 12) holds teams recipients",
	}
	wantProblems(t, lines, want)
}

// wantProblems checks that the problem lines start with want, one for one.
func wantProblems(t *testing.T, lines, want []string) {
	t.Helper()
	if len(lines) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("problem %d:\n got %s\nwant %s…", i, lines[i], w)
		}
	}
}
