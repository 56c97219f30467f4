package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const dryRunConfig = `
data_dir: DATA
tenants:
  - id: acme
    channels:
      whatsapp: {accounts: [{name: sales, driver: sandbox}]}
      teams: {accounts: [{name: ops, driver: sandbox}]}
    automations:
      - name: invoices-to-finance
        when: {inbound: {channel: whatsapp, text: {contains_any: [invoice]}}}
        do:
          - forward: {to: "teams:channel:team1/chan1", template: "WhatsApp {{.From.Masked}}: {{.Text}}"}
          - reply: {text: "Thanks, Finance will answer within a day."}
      - name: help
        when: {inbound: {channel: whatsapp, text: {keyword: help}}}
        do: [{reply: {text: "How can we help?"}}]
      - name: vip
        when: {inbound: {channel: whatsapp, text: {keyword: vip}}}
        do:
          - tag: {add: [vip]}
          - set_consent: {state: opt_in}
          - webhook: {url: "https://ops.example.com/hook", secret_env: OPS_SECRET}
      - name: shipped
        when: {hook: {name: order-shipped}}
        do: [{send: {channel: whatsapp, to: "+4915112345678", text: "Order {{.Hook.order_id}} has shipped"}}]
`

// TestAutomationsDryRun: the dry run prints the matching rules and their planned actions, and
// sends nothing: no server runs and the data dir stays empty.
func TestAutomationsDryRun(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfgPath := filepath.Join(dir, "switchboard.yaml")
	if err := os.WriteFile(cfgPath, []byte(strings.ReplaceAll(dryRunConfig, "DATA", data)), 0o600); err != nil {
		t.Fatal(err)
	}
	event := filepath.Join(dir, "event.json")
	os.WriteFile(event, []byte(`{"channel":"whatsapp","from":"+4915112345678","text":"Invoice 42 attached"}`), 0o600)
	badEvent := filepath.Join(dir, "bad.json")
	os.WriteFile(badEvent, []byte(`{"channel":"whatsapp","sender":"+4915112345678"}`), 0o600)

	tests := []struct {
		name    string
		args    []string
		want    []string
		wantErr bool
	}{
		{"flags", []string{"--tenant", "acme", "--channel", "whatsapp", "--from", "+4915112345678", "--text", "Invoice 42 attached"}, []string{
			"dry run: nothing is sent",
			"rule invoices-to-finance matches",
			`do[0] forward → teams/ops teams:channel:team1/chan1 (hops 1): "WhatsApp +49******5678: Invoice 42 attached"`,
			`do[1] reply → whatsapp/sales +4915112345678 (hops 1): "Thanks, Finance will answer within a day."`,
		}, false},
		{"other actions", []string{"--tenant", "acme", "--from", "+4915112345678", "--text", "VIP"}, []string{
			"rule vip matches",
			"do[0] tag → +4915112345678 add [vip] remove []",
			"do[1] set_consent → whatsapp +4915112345678 opted_in",
			"do[2] webhook → POST https://ops.example.com/hook (signed, webhook-id automation:msg_dryrun:vip:2)",
		}, false},
		{"hook", []string{"--tenant", "acme", "--hook", "order-shipped", "--body", `{"order_id":"A-1"}`}, []string{
			"rule shipped matches",
			`do[0] send → whatsapp/sales +4915112345678 (hops 1): "Order A-1 has shipped"`,
		}, false},
		{"hook body not an object", []string{"--tenant", "acme", "--hook", "order-shipped", "--body", `[1]`}, []string{"--body must be a JSON object"}, true},
		{"event file", []string{"--tenant", "acme", "--event", event}, []string{"rule invoices-to-finance matches", "do[0] forward"}, false},
		{"no match", []string{"--tenant", "acme", "--from", "+4915112345678", "--text", "hello"}, []string{"no automation of tenant acme matches"}, false},
		{"hop limit", []string{"--tenant", "acme", "--event", filepath.Join(dir, "hops.json")}, []string{"rule help matches", "does nothing: hop limit reached"}, false},
		{"unknown tenant", []string{"--tenant", "nope", "--from", "+4915112345678", "--text", "x"}, []string{`no tenant "nope"`}, true},
		{"bad event", []string{"--tenant", "acme", "--event", badEvent}, []string{"not an event"}, true},
	}
	os.WriteFile(filepath.Join(dir, "hops.json"), []byte(`{"channel":"whatsapp","from":"+4915112345678","text":"HELP","hops":3}`), 0o600)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runCLI(t, t.Context(), nil, append([]string{"automations", "test", "-c", cfgPath}, tt.args...)...)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error:\n%s", out)
				}
				out += err.Error()
			} else if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the dry run touched the data dir: %v", err)
	}
}

// TestConfigCheckTenAutomationMistakes: ten mistakes in automations, ten file:line problems, exit 1.
func TestConfigCheckTenAutomationMistakes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte(`tenants:
  - id: acme
    channels:
      whatsapp: {accounts: [{name: sales, driver: sandbox}]}
      teams: {accounts: [{name: ops, driver: sandbox}]}
    automations:
      - {name: a1, when: {inbound: {channel: whatsapp, colour: red}}, do: [{reply: {text: hi}}]}
      - {name: a2, when: {inbound: {channel: whatsapp, text: {contains_any: {x: 1}}}}, do: [{reply: {text: hi}}]}
      - {name: a3, when: {inbound: {channel: whatsapp, text: {regex: "inv(oice"}}}, do: [{reply: {text: hi}}]}
      - {name: a4, when: {inbound: {channel: whatsapp, account: marketing}}, do: [{reply: {text: hi}}]}
      - {name: a5, when: {inbound: {channel: whatsapp}}, do: [{reply: {text: "{{.Txt}}"}}]}
      - {name: a6, when: {inbound: {channel: whatsapp}}, if: "text ==== 1", do: [{reply: {text: hi}}]}
      - {name: a7, when: {inbound: {channel: teams}}, do: [{forward: {to: "+4915112345678", account: nope}}]}
      - {name: a8, when: {inbound: {channel: telegram}}, do: [{reply: {text: hi}}]}
      - {name: a9, when: {inbound: {channel: teams}}, do: [{launch: {rocket: true}}]}
      - name: echo
        when: {inbound: {channel: whatsapp, from: "+4915112345679"}}
        do: [{forward: {to: "+4915112345679"}}]
`), 0o600)
	out, err := runCLI(t, t.Context(), nil, "config", "check", path)
	var exit exitError
	if !errors.As(err, &exit) || exit.code != 1 {
		t.Fatalf("want exit status 1, got %v\n%s", err, out)
	}
	for i, want := range []string{
		"bad.yaml:7: tenants[0].automations[0].when.inbound.colour: unknown key",
		"bad.yaml:8: tenants[0].automations[1].when.inbound.text.contains_any:",
		"bad.yaml:9: tenants[0].automations[2].when.inbound.text.regex: invalid regular expression",
		"bad.yaml:10: tenants[0].automations[3].when.inbound.account: unknown whatsapp account",
		"bad.yaml:11: tenants[0].automations[4].do[0].reply.text: template does not work",
		"bad.yaml:12: tenants[0].automations[5].if: condition does not compile",
		"bad.yaml:13: tenants[0].automations[6].do[0].forward.account: unknown whatsapp account \"nope\"",
		"bad.yaml:14: tenants[0].automations[7].when.inbound.channel: unknown channel",
		"bad.yaml:15: tenants[0].automations[8].do[0].launch: unknown key",
		"bad.yaml:18: tenants[0].automations[9].do[0].forward.to: forwarding loop: echo → echo",
		"10 problem(s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("problem %d: output lacks %q:\n%s", i, want, out)
		}
	}
}
