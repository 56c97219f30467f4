package delivery_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
	"github.com/switchboard-gateway/switchboard/store"
)

// TestAttemptMetricsCarryNoGeneratedIDs: the endpoint label of the attempt metrics is the name
// of a configured endpoint, but "api" for one made through the API, whose generated id would be
// an identifier (a new series for every endpoint ever created).
func TestAttemptMetricsCarryNoGeneratedIDs(t *testing.T) {
	b := openBus(t)
	db := openStore(t)
	srv, hits := receiver(t)
	key, _ := delivery.ParseSecret(delivery.NewSecret())
	m := &outcomes{seen: make(chan string, 64)}
	d := runDispatcher(t, delivery.Config{Bus: b, Sealer: noSealer{}, Store: db, Refresh: time.Hour, Metrics: m, Log: zerolog.Nop(),
		Endpoints: []delivery.Endpoint{{ID: "crm", Tenant: "acme", URL: srv.URL, Secrets: []delivery.Secret{key}, AllowPrivate: true}}})
	if err := db.CreateWebhook(t.Context(), store.Webhook{ID: "wh_3f9a1c", Tenant: "acme", URL: srv.URL, AllowPrivate: true,
		Secrets: []store.WebhookSecret{{Value: delivery.NewSecret(), CreatedAt: time.Now()}}}); err != nil {
		t.Fatal(err)
	}
	d.Changed()
	go func() { // both endpoints' deliveries; only the metrics matter here
		for {
			select {
			case <-hits:
			case <-t.Context().Done():
				return
			}
		}
	}()
	// The stored endpoint's consumer may start after a first event: publish until it took one.
	timeout := time.After(30 * time.Second)
	for i := 0; ; i++ {
		publish(t, b, fmt.Sprintf("msg_%d", i), gateway.StatusSent, time.Now())
		got := ""
		select {
		case got = <-m.seen:
		case <-timeout:
			t.Fatal("the stored endpoint got nothing")
		}
		if got != "crm:ok" {
			break
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range m.got {
		if strings.Contains(g, "wh_") {
			t.Errorf("an attempt metric is labelled with a generated id: %s", g)
		}
	}
}
