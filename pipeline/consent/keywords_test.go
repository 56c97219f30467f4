package consent_test

import (
	"testing"

	"github.com/switchboard-gateway/switchboard/pipeline/consent"
)

func TestMatch(t *testing.T) {
	extended := defaultKeywords
	extended.OptOut = append(append([]string{}, defaultKeywords.OptOut...), "ARRET", "BAJA", "STOPP")
	tests := []struct {
		text string
		want consent.Kind
	}{
		// Every built-in keyword, as written.
		{"STOP", consent.KindOptOut}, {"STOPALL", consent.KindOptOut}, {"UNSUBSCRIBE", consent.KindOptOut},
		{"CANCEL", consent.KindOptOut}, {"END", consent.KindOptOut}, {"QUIT", consent.KindOptOut},
		{"REVOKE", consent.KindOptOut}, {"OPTOUT", consent.KindOptOut},
		{"START", consent.KindOptIn}, {"YES", consent.KindOptIn}, {"UNSTOP", consent.KindOptIn},
		{"HELP", consent.KindHelp}, {"INFO", consent.KindHelp},
		// Any case, surrounding whitespace and punctuation.
		{"stop", consent.KindOptOut}, {"Stop", consent.KindOptOut}, {"sToP", consent.KindOptOut},
		{"  stop ", consent.KindOptOut}, {"\tSTOP\n", consent.KindOptOut}, {"stop!", consent.KindOptOut},
		{"STOP.", consent.KindOptOut}, {"¡Stop!", consent.KindOptOut}, {"\"stop\"", consent.KindOptOut},
		{"...stop...", consent.KindOptOut}, {"\u00a0stop\u00a0", consent.KindOptOut}, {"start!!", consent.KindOptIn},
		{"help?", consent.KindHelp}, {"unstop", consent.KindOptIn}, {"opt-out", consent.KindNone},
		// Not keywords: more than one word, a longer word, a word inside a word, nothing.
		{"stop please", consent.KindNone}, {"please stop", consent.KindNone}, {"STOPPED", consent.KindNone},
		{"unstoppable", consent.KindNone}, {"st op", consent.KindNone}, {"stop stop", consent.KindNone},
		{"", consent.KindNone}, {"   ", consent.KindNone}, {"!!!", consent.KindNone}, {"stopp", consent.KindNone},
		{"yes I want to stop", consent.KindNone}, {"STOP🛑", consent.KindNone}, {"s.t.o.p", consent.KindNone},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			if got := consent.Match(tt.text, defaultKeywords); got != tt.want {
				t.Fatalf("Match(%q) = %q, want %q", tt.text, got, tt.want)
			}
		})
	}
	// Lists extended per tenant and language.
	for _, tt := range []struct {
		text string
		want consent.Kind
	}{{"arret", consent.KindOptOut}, {"Baja.", consent.KindOptOut}, {"STOPP", consent.KindOptOut}, {"stop", consent.KindOptOut}, {"arrete", consent.KindNone}} {
		if got := consent.Match(tt.text, extended); got != tt.want {
			t.Errorf("extended Match(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
	// No lists, no keywords.
	if got := consent.Match("STOP", consent.Keywords{}); got != consent.KindNone {
		t.Errorf("Match with no lists = %q", got)
	}
}
