package dashboard_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestProxyCannotMintWebhookSecrets: the page reads webhooks and their delivery log, but even
// with a valid CSRF token it cannot create an endpoint or rotate a secret through the proxy:
// those answers carry a signing secret, which must never reach a page.
func TestProxyCannotMintWebhookSecrets(t *testing.T) {
	e := newEnv(t, false)
	e.signIn(goodKey)
	_, csrf := e.page()
	header := map[string]string{"X-CSRF-Token": csrf, "Content-Type": "application/json"}
	for _, path := range []string{"/ui/api/webhooks", "/ui/api/webhooks/wh_1/secrets", "/ui/api/webhooks/wh_1/replay?since=1h"} {
		n := e.api.count()
		a := e.do("POST", path, strings.NewReader(`{"url":"https://crm.example/hook"}`), header)
		if a.status != http.StatusForbidden || e.api.count() != n {
			t.Errorf("POST %s: %d (reached the API: %v)", path, a.status, e.api.count() != n)
		}
	}
	n := e.api.count()
	if a := e.do("GET", "/ui/api/webhooks", nil, nil); a.status != http.StatusOK || e.api.count() != n+1 {
		t.Errorf("GET webhooks: %d", a.status)
	}
}
