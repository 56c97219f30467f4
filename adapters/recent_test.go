package adapters

import (
	"fmt"
	"testing"
)

func TestRecentIDsForgetsOldestFirst(t *testing.T) {
	r := newRecentIDs(3)
	for i, k := range []string{"a", "b", "c", "d"} {
		r.put(k, fmt.Sprint(i))
	}
	if _, ok := r.get("a"); ok {
		t.Error("the oldest entry survived")
	}
	for k, want := range map[string]string{"b": "1", "c": "2", "d": "3"} {
		if got, ok := r.get(k); !ok || got != want {
			t.Errorf("get(%q) = %q, %v", k, got, ok)
		}
	}
	r.put("b", "x") // an update keeps its slot: first in, first out
	if got, _ := r.get("b"); got != "x" {
		t.Errorf("b = %q", got)
	}
	r.put("e", "4")
	if _, ok := r.get("b"); ok {
		t.Error("b is the oldest and should be gone")
	}
	if len(r.ids) != 3 {
		t.Errorf("%d entries, want 3", len(r.ids))
	}
}
