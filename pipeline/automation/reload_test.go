package automation

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// logLines hands over every log line (zerolog writes one line per Write).
type logLines chan string

func (l logLines) Write(p []byte) (int, error) {
	l <- string(p)
	return len(p), nil
}

// TestReloadRefusalIsLogged: an invalid file is refused with an error line listing its problems
// (file:line and path), the rules in force stay; a valid one is applied and logged.
func TestReloadRefusalIsLogged(t *testing.T) {
	const rules = `
      - name: ping
        when: {inbound: {channel: whatsapp, text: {equals: ping}}}
        do: [{reply: {text: "PONG"}}]
`
	e, _, _ := newEngine(t, rules)
	path := filepath.Join(t.TempDir(), "switchboard.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(tenantYAML+s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(rules)
	lines := make(logLines, 64)
	signal := make(chan struct{}, 1)
	results := make(chan ReloadResult, 4)
	r, err := NewReloader(ReloaderConfig{Path: path, Engine: e, Interval: time.Hour, Signal: signal,
		OnReload: func(res ReloadResult) { results <- res }, Log: zerolog.New(lines)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	reload := func() (ReloadResult, map[string]any) {
		t.Helper()
		signal <- struct{}{}
		res := <-results
		var line map[string]any
		if err := json.Unmarshal([]byte(<-lines), &line); err != nil {
			t.Fatal(err)
		}
		return res, line
	}

	write(strings.Replace(rules, "equals: ping", `regex: "(oops"`, 1))
	res, line := reload()
	if res.Applied || line["event"] != "config_reload_refused" || line["level"] != "error" {
		t.Fatalf("invalid file: applied %v, logged %v", res.Applied, line)
	}
	problems, _ := line["problems"].([]any)
	if len(problems) != 1 || !strings.Contains(problems[0].(string), "switchboard.yaml:13: tenants[0].automations[0].when.inbound.text.regex") {
		t.Fatalf("logged problems %v", line["problems"])
	}
	if n := len(e.rules.Load().byTenant["acme"]); n != 1 {
		t.Fatalf("%d rules in force after the refusal", n)
	}

	write(rules + `
      - name: pong
        when: {inbound: {channel: whatsapp, text: {equals: pong}}}
        do: [{reply: {text: "PING"}}]
`)
	res, line = reload()
	if !res.Applied || line["event"] != "config_reloaded" || line["automations"] != float64(2) {
		t.Fatalf("valid file: applied %v, logged %v", res.Applied, line)
	}
}
