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
	if len(lines) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("problem %d:\n got %s\nwant %s…", i, lines[i], w)
		}
	}
}

func TestAutomationsUnsupported(t *testing.T) {
	tests := []struct{ name, rule, want string }{
		{"status", `{name: s, when: {status: {in: [failed]}}, do: [{reply: {text: x}}]}`, "when.status: the status trigger is not supported"},
		{"scheduled reply", `{name: s, when: {schedule: {cron: "0 9 * * *"}}, do: [{reply: {text: x}}]}`, "do[0].reply: a scheduled rule has no message to reply"},
		{"bad cron", `{name: s, when: {schedule: {cron: "0 25 * * *"}}, do: [{send: {channel: whatsapp, to: "+4915112345678", text: x}}]}`, "when.schedule.cron: invalid cron expression"},
		{"bad zone", `{name: s, when: {schedule: {cron: "0 9 * * *", timezone: Mars/Olympus}}, do: [{send: {channel: whatsapp, to: "+4915112345678", text: x}}]}`, "when.schedule.timezone: unknown time zone"},
		{"two triggers", `{name: s, when: {schedule: {cron: "0 9 * * *"}, inbound: {channel: teams}}, do: [{send: {channel: whatsapp, to: "+4915112345678", text: x}}]}`, "one trigger"},
		{"webhook", `{name: w, when: {inbound: {channel: teams}}, do: [{webhook: {url: "https://x"}}]}`, "do[0].webhook: the webhook action is not supported"},
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
