package metrics

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

type fixedBacklogs []Backlog

func (f fixedBacklogs) Backlogs(context.Context) ([]Backlog, error) { return f, nil }

type fixedAccounts []AccountState

func (f fixedAccounts) AccountStates(context.Context) []AccountState { return f }

// TestNamesAndLabelsFollowConventions: with every series filled in, the exposition passes
// Prometheus' own linter (units, _total counters, snake case, help text), and no label is an
// identifier (message, subject, phone number, webhook or API key).
func TestNamesAndLabelsFollowConventions(t *testing.T) {
	m := New(Config{
		Backlogs: fixedBacklogs{{Stream: "SEND", Consumer: "intake", Messages: 3}},
		Accounts: fixedAccounts{{Tenant: "acme", Channel: "whatsapp", Account: "sales", Ready: true}},
	})
	at := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	m.Accepted("acme", gateway.WhatsApp)
	m.Applied(context.Background(), []store.Applied{
		{Advanced: true, CreatedAt: at, Event: gateway.StatusEvent{MessageID: "msg_1", Tenant: "acme", Channel: gateway.WhatsApp, Status: gateway.StatusDelivered, At: at.Add(time.Second)}},
		{Advanced: true, Event: gateway.StatusEvent{MessageID: "msg_2", Tenant: "acme", Channel: gateway.WhatsApp, Status: gateway.StatusFailed,
			Error: &gateway.ErrorDetail{Code: "not_on_whatsapp"}}},
	})
	m.ConsentRejected("acme", gateway.WhatsApp, "intake", "opted_out")
	m.ConsentChanged("acme", gateway.WhatsApp, "opted_out", "keyword")
	m.WebhookAttempt("acme", "crm", "ok")
	m.RetentionPurged("acme", 1, 2, 3, 4)

	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	identifiers := map[string]bool{"id": true, "message": true, "message_id": true, "subject": true, "phone": true,
		"to": true, "from": true, "peer": true, "webhook_id": true, "key": true, "api_key": true, "user": true}
	ours := 0
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if identifiers[l.GetName()] {
					t.Errorf("%s has an identifier label %q", mf.GetName(), l.GetName())
				}
			}
		}
		if strings.HasPrefix(mf.GetName(), namespace+"_") {
			ours++
		}
	}
	if ours != 10 {
		t.Errorf("%d switchboard metric families, want 10 (each kind filled in)", ours)
	}
}
