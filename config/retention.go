package config

import "time"

// RetentionConfig is how long a tenant keeps its messages; 0 (the default) keeps them. Counts
// are days, unsigned, so a negative value is a parse error.
type RetentionConfig struct {
	ContentDays  uint `yaml:"content_days"`  // bodies and media references purged, metadata kept
	MetadataDays uint `yaml:"metadata_days"` // messages and their status history deleted
	InboundDays  uint `yaml:"inbound_days"`  // inbound messages deleted
}

// Durations returns the three periods as durations (0 = keep).
func (r RetentionConfig) Durations() (content, metadata, inbound time.Duration) {
	day := 24 * time.Hour
	return time.Duration(r.ContentDays) * day, time.Duration(r.MetadataDays) * day, time.Duration(r.InboundDays) * day
}

// IsZero reports whether the tenant keeps everything.
func (r RetentionConfig) IsZero() bool { return r == RetentionConfig{} }
