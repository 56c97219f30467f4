package main

import (
	"strings"
	"testing"
	"time"
)

func TestPhoneSeenWarnsBeforeWhatsAppUnlinks(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		ago  time.Duration
		warn bool
	}{
		{time.Hour, false},
		{9 * 24 * time.Hour, false},
		{11 * 24 * time.Hour, true},
	}
	for _, tt := range tests {
		got := phoneSeen(now.Add(-tt.ago), now)
		if !strings.HasPrefix(got, "phone last seen ") || strings.Contains(got, "will unlink") != tt.warn {
			t.Errorf("%s ago: %q (warning wanted: %v)", tt.ago, got, tt.warn)
		}
	}
}
