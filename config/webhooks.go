package config

// WebhookConfig is one webhook endpoint of a tenant (pipeline/delivery): events are posted to URL,
// signed per the Standard Webhooks specification with the secrets in SecretsFile.
type WebhookConfig struct {
	// ID names the endpoint within the tenant ([a-z0-9_-]); it names its bus consumers, so
	// renaming an endpoint starts it afresh.
	ID  string `yaml:"id"`
	URL string `yaml:"url"`
	// Events the endpoint receives (message.status, message.inbound, consent.changed,
	// account.state, webhook.disabled); empty means all.
	Events []string `yaml:"events"`
	// SecretsFile holds one or two whsec_ secrets, one a line ('#' comments), readable by the
	// owner only; both sign while a secret is being rotated.
	SecretsFile string `yaml:"secrets_file"`
	// AllowPrivate permits a target on a private, loopback or link-local address (an internal
	// receiver). Off, such targets are refused after DNS resolution.
	AllowPrivate bool `yaml:"allow_private"`
}

// Webhook event types (pipeline/delivery).
var webhookEvents = []string{"message.status", "message.inbound", "consent.changed", "account.state", "webhook.disabled"}

// checkWebhooks validates a tenant's webhooks; the secrets file is read when the gateway starts.
func checkWebhooks(r *report, t *TenantConfig, p string) {
	ids := map[string]bool{}
	for i, w := range t.Webhooks {
		wp := indexPath(p+".webhooks", i)
		if checkName(r, wp+".id", w.ID, "every webhook needs an id, e.g. id: crm") {
			if ids[w.ID] {
				r.add(wp+".id", "duplicate webhook id %q in this tenant", w.ID)
			}
			ids[w.ID] = true
		}
		if w.URL == "" {
			r.add(wp+".url", "missing: the endpoint to post events to, e.g. https://crm.example.com/hooks/switchboard")
		} else {
			checkURL(r, wp+".url", w.URL, "https://crm.example.com/hooks/switchboard", "https", "http")
		}
		for j, ev := range w.Events {
			oneOf(r, indexPath(wp+".events", j), "event", ev, webhookEvents...)
		}
		if w.SecretsFile == "" {
			r.add(wp+".secrets_file", "missing: a file with the endpoint's whsec_ secret (`switchboard webhooks secret --out FILE`)")
		}
	}
}
