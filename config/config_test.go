package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// writeConfig writes src to switchboard.yaml in a fresh temp dir and returns its path.
func writeConfig(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "switchboard.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// lineOf returns the 1-based line of src holding marker, which must occur exactly once.
func lineOf(t *testing.T, src, marker string) int {
	t.Helper()
	if n := strings.Count(src, marker); n != 1 {
		t.Fatalf("marker %q occurs %d times in the test file", marker, n)
	}
	return strings.Count(src[:strings.Index(src, marker)], "\n") + 1
}

func problemsOf(t *testing.T, err error) Problems {
	t.Helper()
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error %v does not carry Problems", err)
	}
	if code := gateway.ErrorCode(err); code != gateway.EInvalidField {
		t.Errorf("error code = %q, want %q", code, gateway.EInvalidField)
	}
	return ps
}

func dump(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("\n\t" + p.String())
	}
	return b.String()
}

const validFile = `data_dir: DATA
log: {level: debug, format: console}
server:
  listen: "127.0.0.1:7000"
  public_url: https://gw.example.com/
  max_body: 512KiB
  request_timeout: 5s
bus:
  embedded: {listen: "127.0.0.1:4222"}
  max_deliver: 5
store:
  driver: sqlite
security:
  master_keys_file: /etc/switchboard/master.keys
tenants:
  - id: acme
    channels:
      whatsapp:
        consent:
          keywords: {opt_out: [arret, " Baja "], help: [aide]}
          replies: {opt_out: bye}
        accounts:
          - name: sales
            driver: sandbox
            sandbox: {delivered_after: 1s, read_after: 2s, fail: ["+61 491 570 156"], replies: [{match: ping, text: pong}]}
          - name: support
            driver: whatsmeow
            whatsmeow: {rate_per_minute: 6}
      teams:
        accounts:
          - name: ops
            driver: graph
            graph:
              tenant_id: contoso.onmicrosoft.com
              client_id: 11111111-2222-3333-4444-555555555555
              cloud: usgov
              channels: [team-1/channel-1]
          - name: bot
            driver: graph
            graph:
              tenant_id: t
              client_id: c
              auth: application
              client_secret_env: TEAMS_SECRET
              authority_url: http://127.0.0.1:9999/
              graph_url: http://127.0.0.1:9998
    automations:
      - name: hello
        when: {inbound: {channel: whatsapp}}
        do: [{reply: {text: hi}}]
`

func TestParseValidFile(t *testing.T) {
	dataDir := t.TempDir()
	src := strings.Replace(validFile, "DATA", dataDir, 1)
	c, err := Parse("switchboard.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	wa := c.Tenant("acme").Channel(gateway.WhatsApp)
	teams := c.Tenant("acme").Channel(gateway.Teams)
	checks := []struct {
		name      string
		got, want any
	}{
		{"data_dir", c.DataDir, dataDir},
		{"log.level", c.Log.Level, "debug"},
		{"log.format", c.Log.Format, "console"},
		{"server.listen", c.Server.Listen, "127.0.0.1:7000"},
		{"server.public_url trimmed", c.Server.PublicURL, "https://gw.example.com"},
		{"server.max_body", c.Server.MaxBody, 512 * KiB},
		{"server.request_timeout", c.Server.RequestTimeout, 5 * time.Second},
		{"server.rate_limit default", c.Server.RateLimit, RateLimitConfig{RequestsPerSecond: 200, Burst: 400}},
		{"bus.embedded.listen", c.Bus.Embedded.Listen, "127.0.0.1:4222"},
		{"bus.embedded.store_dir derived", c.Bus.Embedded.StoreDir, filepath.Join(dataDir, "nats")},
		{"bus.max_deliver", c.Bus.MaxDeliver, 5},
		{"bus.ack_wait default", c.Bus.AckWait, 30 * time.Second},
		{"bus.duplicate_window default", c.Bus.DuplicateWindow, 2 * time.Minute},
		{"bus.status_max_age default", c.Bus.StatusMaxAge, 72 * time.Hour},
		{"store.dsn derived", c.Store.DSN, filepath.Join(dataDir, "switchboard.db")},
		{"store.batch_size default", c.Store.BatchSize, 256},
		{"store.batch_wait default", c.Store.BatchWait, 2 * time.Millisecond},
		{"security.master_keys_file", c.Security.MasterKeysFile, "/etc/switchboard/master.keys"},
		{"whatsapp require_opt_in default", *wa.Consent.RequireOptIn, true},
		{"whatsapp reply_window default", wa.Consent.ReplyWindow, 24 * time.Hour},
		{"opt_out keywords merged", strings.Join(wa.Consent.Keywords.OptOut, " "), "STOP STOPALL UNSUBSCRIBE CANCEL END QUIT REVOKE OPTOUT ARRET BAJA"},
		{"opt_in keywords default", strings.Join(wa.Consent.Keywords.OptIn, " "), "START YES UNSTOP"},
		{"help keywords merged", strings.Join(wa.Consent.Keywords.Help, " "), "HELP INFO AIDE"},
		{"opt_out reply", wa.Consent.Replies.OptOut, "bye"},
		{"teams require_opt_in default", *teams.Consent.RequireOptIn, false},
		{"sandbox delivered_after", wa.Account("sales").Sandbox.DeliveredAfter, time.Second},
		{"sandbox fail normalised", wa.Account("sales").Sandbox.Fail, []string{"+61491570156"}},
		{"sandbox fail_code default", wa.Account("sales").Sandbox.FailCode, "channel_error"},
		{"sandbox reply", wa.Account("sales").Sandbox.Replies, []SandboxReply{{Match: "ping", Text: "pong"}}},
		{"sales has no whatsmeow section", wa.Account("sales").WhatsMeow == nil, true},
		{"whatsmeow rate", wa.Account("support").WhatsMeow.RatePerMinute, 6},
		{"whatsmeow burst default", wa.Account("support").WhatsMeow.Burst, 5},
		{"whatsmeow media default", wa.Account("support").WhatsMeow.MediaMaxSize, 16 * MiB},
		{"support has no sandbox section", wa.Account("support").Sandbox == nil, true},
		{"graph auth default", teams.Account("ops").Graph.Auth, AuthDelegated},
		{"graph usgov authority", teams.Account("ops").Graph.AuthorityURL, "https://login.microsoftonline.us"},
		{"graph usgov graph", teams.Account("ops").Graph.GraphURL, "https://graph.microsoft.us"},
		{"graph poll default", teams.Account("ops").Graph.PollInterval, 30 * time.Second},
		{"graph explicit authority trimmed", teams.Account("bot").Graph.AuthorityURL, "http://127.0.0.1:9999"},
		{"graph explicit graph url", teams.Account("bot").Graph.GraphURL, "http://127.0.0.1:9998"},
		{"automations kept raw", len(c.Tenants[0].Automations), 1},
		{"automation line", c.Tenants[0].Automations[0].Line, lineOf(t, src, "- name: hello")},
		{"unknown tenant", c.Tenant("nope") == nil, true},
		{"unknown account", wa.Account("nope") == nil, true},
	}
	for _, tc := range checks {
		if fmt.Sprint(tc.got) != fmt.Sprint(tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestExampleFilePassesCheck(t *testing.T) {
	path := filepath.Join("examples", "switchboard.yaml")
	if ps := Check(path); len(ps) != 0 {
		t.Fatalf("Check(%s) found problems:%s", path, dump(ps))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(path, data)
	if err != nil {
		t.Fatal(err)
	}
	if c.Bus.Embedded == nil || c.Store.Driver != StoreSQLite {
		t.Errorf("the quickstart should use the embedded bus and SQLite: %+v %+v", c.Bus, c.Store)
	}
	for _, ch := range gateway.Channels {
		cc := c.Tenants[0].Channel(ch)
		if cc == nil || len(cc.Accounts) == 0 {
			t.Fatalf("the quickstart should configure %s", ch)
		}
		for _, a := range cc.Accounts {
			if a.Driver != DriverSandbox {
				t.Errorf("%s account %s uses driver %s, want sandbox", ch, a.Name, a.Driver)
			}
		}
	}
}

func TestLoadOverrides(t *testing.T) {
	const file = `data_dir: ./from-file
server: {listen: ":7000", max_body: 2MiB}
bus:
  embedded: {store_dir: /var/lib/nats}
store: {driver: sqlite}
log: {level: warn}
`
	cases := []struct {
		name  string
		env   map[string]string
		args  []string
		check func(t *testing.T, c *Config)
	}{
		{
			name: "file only",
			check: func(t *testing.T, c *Config) {
				want := []string{":7000", "./from-file", "from-file/switchboard.db", "/var/lib/nats", "warn", "2MiB"}
				got := []string{c.Server.Listen, c.DataDir, c.Store.DSN, c.Bus.Embedded.StoreDir, c.Log.Level, c.Server.MaxBody.String()}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("got %v, want %v", got, want)
				}
			},
		},
		{
			name: "env wins over the file and moves derived paths",
			env: map[string]string{
				"SWITCHBOARD_SERVER_LISTEN":                         ":9000",
				"SWITCHBOARD_DATA_DIR":                              "/srv/sb",
				"SWITCHBOARD_SERVER_MAX_BODY":                       "4MiB",
				"SWITCHBOARD_SERVER_RATE_LIMIT_BURST":               "9",
				"SWITCHBOARD_SERVER_RATE_LIMIT_REQUESTS_PER_SECOND": "2.5",
				"SWITCHBOARD_BUS_ACK_WAIT":                          "1m",
				"SWITCHBOARD_LOG_FORMAT":                            "console",
				"SWITCHBOARD_SECURITY_MASTER_KEYS_FILE":             "/run/secrets/keys",
				"SWITCHBOARD_MASTER_KEYS":                           "mk_1:AAAA",
			},
			check: func(t *testing.T, c *Config) {
				want := []string{":9000", "/srv/sb", "/srv/sb/switchboard.db", "/var/lib/nats", "4MiB", "9", "2.5", "1m0s", "console", "/run/secrets/keys", "mk_1:AAAA"}
				got := []string{c.Server.Listen, c.DataDir, c.Store.DSN, c.Bus.Embedded.StoreDir, c.Server.MaxBody.String(),
					fmt.Sprint(c.Server.RateLimit.Burst), fmt.Sprint(c.Server.RateLimit.RequestsPerSecond), c.Bus.AckWait.String(),
					c.Log.Format, c.Security.MasterKeysFile, string(c.Security.MasterKeys)}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("got  %v\nwant %v", got, want)
				}
			},
		},
		{
			name: "bus urls from env replace the file's embedded server",
			env:  map[string]string{"SWITCHBOARD_BUS_URLS": "nats://n1:4222, nats://n2:4222,"},
			check: func(t *testing.T, c *Config) {
				if c.Bus.Embedded != nil || fmt.Sprint(c.Bus.URLs) != "[nats://n1:4222 nats://n2:4222]" {
					t.Errorf("bus = %+v", c.Bus)
				}
			},
		},
		{
			name: "postgres from env",
			env: map[string]string{
				"SWITCHBOARD_STORE_DRIVER": "postgres",
				"SWITCHBOARD_STORE_DSN":    "postgres://sb:pw@db:5432/sb",
			},
			check: func(t *testing.T, c *Config) {
				if c.Store.Driver != StorePostgres || c.Store.DSN != "postgres://sb:pw@db:5432/sb" {
					t.Errorf("store = %+v", c.Store)
				}
			},
		},
		{
			name: "flags win over env",
			env:  map[string]string{"SWITCHBOARD_SERVER_LISTEN": ":9000", "SWITCHBOARD_LOG_LEVEL": "error"},
			args: []string{"--listen", ":9100", "--data-dir", "/tmp/sbflag", "--bus-urls", "nats://a:1,nats://b:2", "--server-request-timeout", "3s"},
			check: func(t *testing.T, c *Config) {
				want := []string{":9100", "/tmp/sbflag", "error", "[nats://a:1 nats://b:2]", "3s"}
				got := []string{c.Server.Listen, c.DataDir, c.Log.Level, fmt.Sprint(c.Bus.URLs), c.Server.RequestTimeout.String()}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("got %v, want %v", got, want)
				}
			},
		},
		{
			name: "unchanged flags do not override",
			args: []string{},
			check: func(t *testing.T, c *Config) {
				if c.Server.Listen != ":7000" || c.DataDir != "./from-file" {
					t.Errorf("defaults of unset flags leaked: %q %q", c.Server.Listen, c.DataDir)
				}
			},
		},
	}
	path := writeConfig(t, file)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var flags *pflag.FlagSet
			if tc.args != nil {
				flags = pflag.NewFlagSet("serve", pflag.ContinueOnError)
				AddFlags(flags)
				flags.Duration("server-request-timeout", 0, "")
				if err := flags.Parse(tc.args); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Load(path, flags)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			tc.check(t, c)
		})
	}
}

func TestLoadReportsEnvAndFlagSources(t *testing.T) {
	path := writeConfig(t, "server:\n  listen: \":7000\"\ntenants:\n  - id: Bad Id\n")
	t.Setenv("SWITCHBOARD_SERVER_MAX_BODY", "lots")
	t.Setenv("SWITCHBOARD_STORE_DRIVER", "mysql")
	t.Setenv("SWITCHBOARD_BUS_MAX_DELIVER", "0")
	t.Setenv("SWITCHBOARD_STORE_BATCH_SIZE", "many")
	flags := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	AddFlags(flags)
	if err := flags.Parse([]string{"--listen", "nowhere"}); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, flags)
	ps := problemsOf(t, err)
	want := []Problem{
		{File: path, Line: 4, Field: "tenants[0].id", Message: `invalid name "Bad Id": use 1 to 32 of a-z, 0-9, _ and - (it becomes part of NATS subjects)`},
		{File: "env SWITCHBOARD_SERVER_MAX_BODY", Field: "server.max_body", Message: `invalid size "lots": use a number of bytes with an optional unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. 1MiB`},
		{File: "env SWITCHBOARD_STORE_BATCH_SIZE", Field: "store.batch_size", Message: `must be a whole number, got "many"`},
		{File: "flag --listen", Field: "server.listen", Message: `invalid address "nowhere": use host:port or :port, e.g. :8080 or 127.0.0.1:8080`},
		{File: "env SWITCHBOARD_BUS_MAX_DELIVER", Field: "bus.max_deliver", Message: "must be at least 1, e.g. 10"},
		{File: "env SWITCHBOARD_STORE_DRIVER", Field: "store.driver", Message: `unknown driver "mysql": use sqlite or postgres`},
	}
	if fmt.Sprint([]Problem(ps)) != fmt.Sprint(want) {
		t.Errorf("problems:%s\nwant:%s", dump(ps), dump(want))
	}
}

func TestLoadErrors(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), nil)
	if gateway.ErrorCode(err) != gateway.ENotFound {
		t.Errorf("missing file: %v (code %s), want not_found", err, gateway.ErrorCode(err))
	}
	ps := Check(filepath.Join(t.TempDir(), "missing.yaml"))
	if len(ps) != 1 || !strings.Contains(ps[0].String(), "missing.yaml: cannot read the file: no such file or directory") {
		t.Errorf("Check of a missing file = %v", ps)
	}
}

func TestMasterKeysNeverFromYAML(t *testing.T) {
	src := "security:\n  master_keys_file: ./k\n  master_keys: \"mk_1:AAAA\"\n"
	ps := Check(writeConfig(t, src))
	if len(ps) != 1 || ps[0].Line != 3 || ps[0].Field != "security.master_keys" ||
		!strings.Contains(ps[0].Message, "SWITCHBOARD_MASTER_KEYS") || !strings.Contains(ps[0].Message, "master_keys_file") {
		t.Fatalf("problems:%s", dump(ps))
	}
	for _, p := range ps {
		if strings.Contains(p.String(), "AAAA") {
			t.Errorf("a problem repeats the key material: %s", p)
		}
	}
}

func TestSecretDoesNotPrint(t *testing.T) {
	t.Setenv(EnvMasterKeys, "mk_1:c2VjcmV0c2VjcmV0")
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Security.MasterKeys) != "mk_1:c2VjcmV0c2VjcmV0" {
		t.Fatalf("MasterKeys = %q", string(c.Security.MasterKeys))
	}
	for _, out := range []string{fmt.Sprint(c.Security), fmt.Sprintf("%+v", c.Security), fmt.Sprintf("%#v", c.Security), fmt.Sprintf("%v", *c)} {
		if strings.Contains(out, "c2VjcmV0") {
			t.Errorf("secret printed: %s", out)
		}
	}
}

func TestDev(t *testing.T) {
	c := Dev()
	if err := c.Validate(); err != nil {
		t.Fatalf("Dev() does not validate: %v", err)
	}
	demo := c.Tenant("demo")
	if demo == nil {
		t.Fatal("no demo tenant")
	}
	sales := demo.Channel(gateway.WhatsApp).Account("sales")
	ops := demo.Channel(gateway.Teams).Account("ops")
	if sales == nil || sales.Driver != DriverSandbox || sales.Sandbox == nil || ops == nil || ops.Driver != DriverSandbox || ops.Sandbox == nil {
		t.Fatalf("dev accounts: %+v %+v", sales, ops)
	}
	if c.Bus.Embedded == nil || c.Store.Driver != StoreSQLite || c.Store.DSN != filepath.Join("data", "switchboard.db") {
		t.Errorf("dev bus/store: %+v %+v", c.Bus, c.Store)
	}
	if c.Security.MasterKeysFile != filepath.Join("data", "master.keys") {
		t.Errorf("dev master keys file = %q", c.Security.MasterKeysFile)
	}
	if !*demo.Channel(gateway.WhatsApp).Consent.RequireOptIn || *demo.Channel(gateway.Teams).Consent.RequireOptIn {
		t.Error("dev consent defaults: want opt-in required on WhatsApp only")
	}

	t.Setenv("SWITCHBOARD_DATA_DIR", "/tmp/sbdev")
	t.Setenv("SWITCHBOARD_SERVER_LISTEN", ":18080")
	c, err := LoadDev(nil)
	if err != nil {
		t.Fatalf("LoadDev: %v", err)
	}
	if c.Server.Listen != ":18080" || c.Store.DSN != "/tmp/sbdev/switchboard.db" ||
		c.Bus.Embedded.StoreDir != "/tmp/sbdev/nats" || c.Security.MasterKeysFile != "/tmp/sbdev/master.keys" {
		t.Errorf("LoadDev overrides: %+v %+v %+v %+v", c.Server, c.Store, c.Bus.Embedded, c.Security)
	}
}

func TestValidateIsIdempotent(t *testing.T) {
	c, err := Parse("x.yaml", []byte(validFile))
	if err != nil {
		t.Fatal(err)
	}
	before := fmt.Sprintf("%+v", c.Tenants[0].Channels.WhatsApp.Consent.Keywords)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if after := fmt.Sprintf("%+v", c.Tenants[0].Channels.WhatsApp.Consent.Keywords); after != before {
		t.Errorf("Validate changed a loaded config: %s → %s", before, after)
	}

	c.Tenants = append(c.Tenants, c.Tenants[0])
	ps := problemsOf(t, c.Validate())
	if len(ps) != 1 || ps[0].Field != "tenants[1].id" || !strings.Contains(ps[0].Message, `duplicate tenant id "acme"`) {
		t.Errorf("problems:%s", dump(ps))
	}
}

func TestProblemString(t *testing.T) {
	cases := []struct {
		p    Problem
		want string
	}{
		{Problem{File: "sb.yaml", Line: 14, Field: "a.b", Message: "bad"}, "sb.yaml:14: a.b: bad"},
		{Problem{File: "sb.yaml", Line: 3, Message: "invalid YAML: x"}, "sb.yaml:3: invalid YAML: x"},
		{Problem{File: "env SWITCHBOARD_X", Field: "x", Message: "bad"}, "env SWITCHBOARD_X: x: bad"},
		{Problem{Field: "x", Message: "bad"}, "x: bad"},
	}
	for _, tc := range cases {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
	err := Problems{cases[0].p, cases[2].p}
	if err.Error() != "sb.yaml:14: a.b: bad\nenv SWITCHBOARD_X: x: bad" {
		t.Errorf("Error() = %q", err.Error())
	}
}

func TestSize(t *testing.T) {
	cases := []struct {
		in   string
		want Size
		str  string
		bad  bool
	}{
		{in: "1MiB", want: MiB, str: "1MiB"},
		{in: "1mib", want: MiB, str: "1MiB"},
		{in: "512KiB", want: 512 * KiB, str: "512KiB"},
		{in: "1.5GiB", want: 3 * GiB / 2, str: "1536MiB"},
		{in: "10MB", want: 10_000_000, str: "10000000B"},
		{in: "2k", want: 2000, str: "2000B"},
		{in: "1048576", want: MiB, str: "1MiB"},
		{in: " 64 KiB ", want: 64 * KiB, str: "64KiB"},
		{in: "100B", want: 100, str: "100B"},
		{in: "", bad: true},
		{in: "MiB", bad: true},
		{in: "1 megabyte", bad: true},
		{in: "-1MiB", bad: true},
		{in: "1.2.3", bad: true},
	}
	for _, tc := range cases {
		var s Size
		err := s.UnmarshalText([]byte(tc.in))
		if tc.bad {
			if err == nil {
				t.Errorf("%q: parsed as %v, want an error", tc.in, s)
			}
			continue
		}
		if err != nil || s != tc.want || s.String() != tc.str {
			t.Errorf("%q: got %d (%s), %v; want %d (%s)", tc.in, s, s, err, tc.want, tc.str)
		}
	}
}
