package config

import (
	"strings"
	"testing"
)

func TestWebhookProblemsHaveTheirLine(t *testing.T) {
	const file = `tenants:
  - id: acme
    channels:
      whatsapp: {accounts: [{name: sales, driver: sandbox}]}
    webhooks:
      - id: crm
        url: ftp://crm.example.com/
        events: [message.status, message.nope]
      - id: crm
        url: https://crm.example.com/hooks
        secrets_file: ./crm.whsec
`
	_, err := Parse("sb.yaml", []byte(file))
	if err == nil {
		t.Fatal("no problems found")
	}
	for _, want := range []string{
		"sb.yaml:7: tenants[0].webhooks[0].url:",
		"sb.yaml:8: tenants[0].webhooks[0].events[1]:",
		"tenants[0].webhooks[0].secrets_file: missing",
		"sb.yaml:9: tenants[0].webhooks[1].id: duplicate",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems lack %q:\n%v", want, err)
		}
	}
	good := strings.Replace(strings.Replace(strings.Replace(file, "ftp://", "https://", 1), ", message.nope", "", 1), "id: crm\n        url: https", "id: erp\n        url: https", 1)
	good = strings.Replace(good, "events: [message.status]\n", "events: [message.status]\n        secrets_file: ./crm.whsec\n", 1)
	if _, err := Parse("sb.yaml", []byte(good)); err != nil {
		t.Fatalf("a good file: %v\n%s", err, good)
	}
}
