package config

import (
	"strings"
	"testing"
	"time"
)

// TestRetentionFromYAML: a tenant's retention is read from the file, in days; a negative count is
// refused with the field named.
func TestRetentionFromYAML(t *testing.T) {
	src := "data_dir: /tmp/sb\ntenants:\n  - id: acme\n    retention: {content_days: 7, metadata_days: 30, inbound_days: 20}\n"
	c, err := Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	content, metadata, inbound := c.Tenant("acme").Retention.Durations()
	day := 24 * time.Hour
	if content != 7*day || metadata != 30*day || inbound != 20*day {
		t.Fatalf("retention %v %v %v", content, metadata, inbound)
	}
	_, err = Parse("test.yaml", []byte(strings.Replace(src, "content_days: 7", "content_days: -7", 1)))
	if err == nil || !strings.Contains(err.Error(), "tenants[0].retention.content_days: must be a whole number, not negative") {
		t.Fatalf("negative days: %v", err)
	}
}
