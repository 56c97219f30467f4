package config

import (
	"fmt"
	"strings"
	"testing"
)

// want is one expected problem: on the line holding marker, about field, with a message that
// contains msg.
type want struct {
	marker, field, msg string
}

// header is a valid start of a tenant for the cases below.
const header = `tenants:
  - id: acme
    channels:
`

func TestCheckReportsEachKindOfProblem(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want []want
	}{
		{
			name: "unknown top-level key",
			src:  "data_dir: ./d\nlisten: \":80\"\n",
			want: []want{{`listen: ":80"`, "listen", `unknown key "listen": it belongs under server (server.listen)`}},
		},
		{
			name: "misspelt key",
			src:  "server:\n  listen: \":80\"\n  max_bodyy: 1MiB\n",
			want: []want{{"max_bodyy", "server.max_bodyy", `unknown key "max_bodyy": did you mean "max_body"?`}},
		},
		{
			name: "unknown key with nothing close",
			src:  "store:\n  flavour: vanilla\n",
			want: []want{{"flavour", "store.flavour", `unknown key "flavour": known keys here are driver, dsn, batch_size, batch_wait, keys_dsn`}},
		},
		{
			name: "graph setting on the account itself",
			src: header + `      teams:
        accounts:
          - name: ops
            driver: graph
            tenant_id: abc
            graph: {tenant_id: abc, client_id: def}
`,
			want: []want{{"tenant_id: abc\n", "tenants[0].channels.teams.accounts[0].tenant_id", "it belongs under graph (graph.tenant_id)"}},
		},
		{
			name: "a key that is the start of a known one",
			src:  "bus:\n  urls: [nats://a:4222]\n  creds: /x.creds\n",
			want: []want{{"creds:", "bus.creds", `unknown key "creds": did you mean "creds_file"?`}},
		},
		{
			name: "api keys file from an older design",
			src:  "tenants:\n  - id: acme\n    api_keys_file: ./k\n",
			want: []want{{"api_keys_file", "tenants[0].api_keys_file", "switchboard keys create"}},
		},
		{
			name: "key set twice",
			src:  "log:\n  level: info\n  level: debug\n",
			want: []want{{"level: debug", "log.level", "set twice (first on line 2): remove one"}},
		},
		{
			name: "scalar where a list belongs",
			src:  "tenants: acme\n",
			want: []want{{"tenants: acme", "tenants", `must be a list (items on lines starting with "- ", or [a, b]), not "acme"`}},
		},
		{
			name: "list where text belongs",
			src:  "server:\n  listen: [\":80\", \":81\"]\n",
			want: []want{{"listen:", "server.listen", "must be a text value, not a list"}},
		},
		{
			name: "mapping where a section is a scalar",
			src:  "bus: nats\n",
			want: []want{{"bus: nats", "bus", `must be a mapping of embedded, urls, creds_file, duplicate_window, status_max_age, inbound_max_age, max_deliver, ack_wait, not "nats"`}},
		},
		{
			name: "not a whole number",
			src:  "bus:\n  max_deliver: ten\n",
			want: []want{{"max_deliver", "bus.max_deliver", `must be a whole number, got "ten"`}},
		},
		{
			name: "not a boolean",
			src: header + `      whatsapp:
        consent: {require_opt_in: maybe}
        accounts: [{name: sales, driver: sandbox}]
`,
			want: []want{{"maybe", "tenants[0].channels.whatsapp.consent.require_opt_in", `must be true or false, got "maybe"`}},
		},
		{
			name: "bad duration",
			src:  "server:\n  request_timeout: 10 seconds\n",
			want: []want{{"request_timeout", "server.request_timeout", `invalid duration "10 seconds": use a number with a unit (ms, s, m, h), e.g. 500ms, 30s, 5m or 72h`}},
		},
		{
			name: "duration without unit",
			src:  "bus:\n  ack_wait: 30\n",
			want: []want{{"ack_wait", "bus.ack_wait", `invalid duration "30"`}},
		},
		{
			name: "bad size",
			src:  "server:\n  max_body: 1 megabyte\n",
			want: []want{{"max_body", "server.max_body", `invalid size "1 megabyte"`}},
		},
		{
			name: "zero size",
			src:  "server:\n  max_body: 0\n",
			want: []want{{"max_body", "server.max_body", "must be more than 0, e.g. 1MiB"}},
		},
		{
			name: "negative duration",
			src:  "store:\n  batch_wait: -1ms\n",
			want: []want{{"batch_wait", "store.batch_wait", "must not be negative"}},
		},
		{
			name: "YAML syntax error",
			src:  "server:\n  listen: \":80\"\n  public_url: http: //x\n",
			want: []want{{"public_url", "", "invalid YAML: mapping values are not allowed in this context"}},
		},
		{
			name: "YAML tab indentation",
			src:  "bus:\n  urls:\n\t- nats://a:4222\n",
			want: []want{{"\t-", "", "invalid YAML: found character that cannot start any token"}},
		},
		{
			name: "YAML error placed at the start of its block",
			src:  "server:\n  listen: \":80\"\n   bad indent: x\n",
			want: []want{{"server:", "", "invalid YAML: did not find expected key (in the block that starts here"}},
		},
		{
			name: "two YAML documents",
			src:  "data_dir: a\n---\ndata_dir: b\n",
			want: []want{{"---", "", "a second YAML document"}},
		},
		{
			name: "master keys in the file",
			src:  "security:\n  master_keys: mk_1:AAAA\n",
			want: []want{{"master_keys:", "security.master_keys", "master key material does not belong in the config file"}},
		},
		{
			name: "unknown log level and format",
			src:  "log:\n  level: verbose\n  format: xml\n",
			want: []want{
				{"verbose", "log.level", `unknown level "verbose": use trace, debug, info, warn or error`},
				{"xml", "log.format", `unknown format "xml": use json or console`},
			},
		},
		{
			name: "bad listen address and public URL",
			src:  "server:\n  listen: \"8080\"\n  public_url: gw.example.com\n",
			want: []want{
				{`listen: "8080"`, "server.listen", `invalid address "8080"`},
				{"public_url", "server.public_url", `invalid URL "gw.example.com": use an absolute http or https URL`},
			},
		},
		{
			name: "postgres without a dsn",
			src:  "store:\n  driver: postgres\n",
			want: []want{{"store:", "store.dsn", "required for postgres"}},
		},
		{
			name: "postgres key vault not a connection string",
			src:  "store:\n  driver: postgres\n  dsn: postgres://db/sb\n  keys_dsn: /var/keys.db\n",
			want: []want{{"keys_dsn", "store.keys_dsn", "not a PostgreSQL connection string"}},
		},
		{
			name: "sqlite key vault in the data file",
			src:  "store:\n  dsn: ./data/sb.db\n  keys_dsn: data/sb.db\n",
			want: []want{{"keys_dsn", "store.keys_dsn", "must be a file of its own"}},
		},
		{
			name: "unknown store driver",
			src:  "store:\n  driver: mysql\n",
			want: []want{{"mysql", "store.driver", `unknown driver "mysql": use sqlite or postgres`}},
		},
		{
			name: "embedded and urls together",
			src:  "bus:\n  embedded: {store_dir: ./n}\n  urls: [nats://a:4222, \"http://b\"]\n",
			want: []want{
				{"embedded:", "bus.embedded", "cannot be used together with bus.urls"},
				{"urls:", "bus.urls[1]", `invalid URL "http://b": use an absolute nats, tls, ws or wss URL`},
			},
		},
		{
			name: "creds for the embedded server",
			src:  "bus:\n  creds_file: /x.creds\n",
			want: []want{{"creds_file", "bus.creds_file", "only applies to an external NATS"}},
		},
		{
			name: "missing tenant id",
			src:  "tenants:\n  - channels: {}\n",
			want: []want{{"- channels", "tenants[0].id", "missing: every tenant needs an id"}},
		},
		{
			name: "invalid tenant id",
			src:  "tenants:\n  - id: Acme.Corp\n",
			want: []want{{"Acme.Corp", "tenants[0].id", `invalid name "Acme.Corp": use 1 to 32 of a-z, 0-9, _ and -`}},
		},
		{
			name: "duplicate tenant ids",
			src:  "tenants:\n  - id: acme\n  - id: beta\n  - id: acme # again\n",
			want: []want{{"acme # again", "tenants[2].id", `duplicate tenant id "acme": tenants[0] (line 2) already uses it`}},
		},
		{
			name: "unknown channel",
			src:  header + "      sms:\n        accounts: []\n",
			want: []want{{"sms:", "tenants[0].channels.sms", `unknown channel "sms": use whatsapp or teams`}},
		},
		{
			name: "channel without accounts",
			src:  header + "      whatsapp:\n        consent: {reply_window: 1h}\n",
			want: []want{{"whatsapp:", "tenants[0].channels.whatsapp.accounts", "a channel needs at least one account"}},
		},
		{
			name: "unknown driver",
			src: header + `      whatsapp:
        accounts:
          - name: sales
            driver: sandbox
          - name: support
            driver: foo
`,
			want: []want{{"driver: foo", "tenants[0].channels.whatsapp.accounts[1].driver", `unknown driver "foo": use sandbox or whatsmeow`}},
		},
		{
			name: "driver of the other channel",
			src:  header + "      teams:\n        accounts:\n          - {name: ops, driver: whatsmeow}\n",
			want: []want{{"name: ops", "tenants[0].channels.teams.accounts[0].driver", `driver "whatsmeow" is not for teams accounts: use sandbox or graph`}},
		},
		{
			name: "missing driver",
			src:  header + "      whatsapp:\n        accounts:\n          - name: sales\n",
			want: []want{{"- name: sales", "tenants[0].channels.whatsapp.accounts[0].driver", "missing: use sandbox or whatsmeow"}},
		},
		{
			name: "invalid and duplicate account names",
			src: header + `      whatsapp:
        accounts:
          - {name: Sales Team, driver: sandbox}
          - {name: sales, driver: sandbox}
          - {name: sales, driver: whatsmeow} # dup
          - {name: a-very-long-account-name-over-32-chars, driver: sandbox}
`,
			want: []want{
				{"Sales Team", "tenants[0].channels.whatsapp.accounts[0].name", `invalid name "Sales Team"`},
				{"# dup", "tenants[0].channels.whatsapp.accounts[2].name", `duplicate account name "sales": tenants[0].channels.whatsapp.accounts[1] (line 7) already uses it`},
				{"a-very-long", "tenants[0].channels.whatsapp.accounts[3].name", `invalid name "a-very-long-account-name-over-32-chars"`},
			},
		},
		{
			name: "same account name on two channels is fine",
			src:  header + "      whatsapp: {accounts: [{name: main, driver: sandbox}]}\n      teams: {accounts: [{name: main, driver: sandbox}]}\n",
		},
		{
			name: "graph without tenant and client ids",
			src: header + `      teams:
        accounts:
          - name: ops
            driver: graph
            graph:
              chats: ["19:abc@thread.v2"]
`,
			want: []want{
				{"graph:", "tenants[0].channels.teams.accounts[0].graph.tenant_id", "missing: the Entra tenant id"},
				{"graph:", "tenants[0].channels.teams.accounts[0].graph.client_id", "missing: the application (client) id"},
			},
		},
		{
			name: "graph driver without a graph section",
			src:  header + "      teams:\n        accounts:\n          - {name: ops, driver: graph}\n",
			want: []want{
				{"name: ops", "tenants[0].channels.teams.accounts[0].graph.tenant_id", "missing"},
				{"name: ops", "tenants[0].channels.teams.accounts[0].graph.client_id", "missing"},
			},
		},
		{
			name: "graph application auth problems",
			src: header + `      teams:
        accounts:
          - name: a
            driver: graph
            graph: {tenant_id: t, client_id: c, auth: application} # no creds
          - name: b
            driver: graph
            graph: {tenant_id: t, client_id: c, auth: application, client_secret_env: "s3cr3t-value!", certificate_file: c.pem} # two
          - name: c
            driver: graph
            graph: {tenant_id: t, client_id: c, auth: app, cloud: mars, graph_url: "graph", channels: [team-only], poll_interval: 10ms} # many
`,
			want: []want{
				{"# no creds", "tenants[0].channels.teams.accounts[0].graph.auth", "application needs a credential"},
				{"# two", "tenants[0].channels.teams.accounts[1].graph.auth", "set only one of client_secret_env, client_secret_file and certificate_file"},
				{"# two", "tenants[0].channels.teams.accounts[1].graph.client_secret_env", "must be the name of an environment variable"},
				{"# many", "tenants[0].channels.teams.accounts[2].graph.auth", `unknown auth "app": use delegated or application`},
				{"# many", "tenants[0].channels.teams.accounts[2].graph.cloud", `unknown cloud "mars": use public, usgov or china`},
				{"# many", "tenants[0].channels.teams.accounts[2].graph.graph_url", `invalid URL "graph"`},
				{"# many", "tenants[0].channels.teams.accounts[2].graph.channels[0]", `invalid channel "team-only": use <team-id>/<channel-id>`},
				{"# many", "tenants[0].channels.teams.accounts[2].graph.poll_interval", "must be at least 1s"},
			},
		},
		{
			name: "settings of another driver",
			src: header + `      whatsapp:
        accounts:
          - name: sales
            driver: whatsmeow
            sandbox: {fail: ["+61491570156"]}
`,
			want: []want{{"sandbox: {fail", "tenants[0].channels.whatsapp.accounts[0].sandbox", "sandbox settings on an account whose driver is whatsmeow: remove them or set driver: sandbox"}},
		},
		{
			name: "sandbox script problems",
			src: header + `      whatsapp:
        accounts:
          - name: sales
            driver: sandbox
            sandbox:
              delivered_after: 1s
              read_after: 100ms
              fail:
                - "+61491570156"
                - "0151 1234"
              fail_code: Boom
              replies:
                - {match: ping}
`,
			want: []want{
				{"read_after", "tenants[0].channels.whatsapp.accounts[0].sandbox.read_after", "100ms is before delivered_after (1s)"},
				{`"0151 1234"`, "tenants[0].channels.whatsapp.accounts[0].sandbox.fail[1]", "leading + (E.164)"},
				{"fail_code", "tenants[0].channels.whatsapp.accounts[0].sandbox.fail_code", `invalid code "Boom"`},
				{"{match: ping}", "tenants[0].channels.whatsapp.accounts[0].sandbox.replies[0].text", "missing: the text of the reply"},
			},
		},
		{
			name: "whatsmeow pacing problems",
			src:  header + "      whatsapp:\n        accounts:\n          - name: sales\n            driver: whatsmeow\n            whatsmeow: {rate_per_minute: 0, media_max_size: 0, reachout_lock: 30s}\n",
			want: []want{
				{"whatsmeow: {", "tenants[0].channels.whatsapp.accounts[0].whatsmeow.rate_per_minute", "must be at least 1"},
				{"whatsmeow: {", "tenants[0].channels.whatsapp.accounts[0].whatsmeow.reachout_lock", "between 1m and 24h"},
				{"whatsmeow: {", "tenants[0].channels.whatsapp.accounts[0].whatsmeow.media_max_size", "must be more than 0"},
			},
		},
		{
			name: "keyword problems",
			src: header + `      whatsapp:
        consent:
          reply_window: -1h
          keywords:
            opt_out: ["stop please", ARRET]
            opt_in: [arret]
        accounts: [{name: sales, driver: sandbox}]
`,
			want: []want{
				{"reply_window", "tenants[0].channels.whatsapp.consent.reply_window", "must not be negative"},
				{"stop please", "tenants[0].channels.whatsapp.consent.keywords.opt_out[0]", `"STOP PLEASE" is not a single word`},
				{"opt_in: [arret]", "tenants[0].channels.whatsapp.consent.keywords.opt_in", `"ARRET" is in both the opt-out and the opt-in keywords`},
			},
		},
		{
			name: "automations must be a list",
			src:  "tenants:\n  - id: acme\n    automations: {name: x}\n",
			want: []want{{"automations:", "tenants[0].automations", "must be a list"}},
		},
		{
			name: "anchors and merge keys are understood",
			src: `defaults: &sb {driver: sandbox}
tenants:
  - id: acme
    channels:
      whatsapp: {accounts: [{<<: *sb, name: sales}]}
`,
			want: []want{{"defaults:", "defaults", `unknown key "defaults"`}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.src)
			got := Check(path)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:%s", len(got), len(tc.want), dump(got))
			}
			for i, w := range tc.want {
				p := got[i]
				line := lineOf(t, tc.src, w.marker)
				if p.File != path || p.Line != line || p.Field != w.field || !strings.Contains(p.Message, w.msg) {
					t.Errorf("problem %d:\n\tgot  %s\n\twant %s:%d: %s: …%s…", i, p, path, line, w.field, w.msg)
				}
				if !strings.HasPrefix(p.String(), fmt.Sprintf("%s:%d: ", path, line)) {
					t.Errorf("String() = %q does not start with file:line", p.String())
				}
			}
		})
	}
}

// A file with ten distinct mistakes gives exactly ten problems, each on its own line, in order.
func TestCheckTenMistakes(t *testing.T) {
	src := `data_dir: ./data
log:
  level: loud                         # 1 unknown level
server:
  listen: ":8080"
  max_body: huge                      # 2 bad size
  request_timout: 5s                  # 3 misspelt key
bus:
  ack_wait: 30                        # 4 duration without unit
store:                                # 5 postgres needs a dsn
  driver: postgres
tenants:
  - id: acme
    channels:
      whatsapp:
        accounts:
          - name: sales
            driver: foo               # 6 unknown driver
          - name: sales               # 7 duplicate account name
            driver: sandbox
      teams:
        accounts:
          - name: ops
            driver: graph
            graph: {tenant_id: t}     # 8 client_id missing
      sms: {}                         # 9 unknown channel
  - id: acme                          # 10 duplicate tenant id
`
	got := Check(writeConfig(t, src))
	wantFields := []string{
		"log.level",
		"server.max_body",
		"server.request_timout",
		"bus.ack_wait",
		"store.dsn",
		"tenants[0].channels.whatsapp.accounts[0].driver",
		"tenants[0].channels.whatsapp.accounts[1].name",
		"tenants[0].channels.teams.accounts[0].graph.client_id",
		"tenants[0].channels.sms",
		"tenants[1].id",
	}
	if len(got) != len(wantFields) {
		t.Fatalf("got %d problems, want %d:%s", len(got), len(wantFields), dump(got))
	}
	for i, field := range wantFields {
		line := lineOf(t, src, fmt.Sprintf("# %d ", i+1))
		if got[i].Line != line || got[i].Field != field {
			t.Errorf("problem %d = %s, want line %d field %s", i+1, got[i], line, field)
		}
	}
}

func TestCheckValidFileHasNoProblems(t *testing.T) {
	for _, src := range []string{"", "# only a comment\n", "data_dir: ./d\n", validFile} {
		if ps := Check(writeConfig(t, src)); len(ps) != 0 {
			t.Errorf("Check(%q) found problems:%s", src, dump(ps))
		}
	}
}
