package server

import (
	"reflect"
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/metrics"
)

// TestBacklogLabelsCarryNoGeneratedIDs: the consumers of a webhook endpoint made through the API
// are named by its generated id; the backlog metric counts them together under "api" (an
// identifier as a label would make a series per endpoint ever created), summed per stream.
func TestBacklogLabelsCarryNoGeneratedIDs(t *testing.T) {
	id1, id2 := gateway.NewID("wh"), gateway.NewID("wh")
	in := []metrics.Backlog{
		{Stream: "STATUS", Consumer: "recorder", Messages: 1},
		{Stream: "STATUS", Consumer: "webhook_acme_crm_status", Messages: 2},
		{Stream: "STATUS", Consumer: "webhook_acme_" + id1 + "_status", Messages: 3},
		{Stream: "STATUS", Consumer: "webhook_acme_" + id2 + "_status", Messages: 4},
		{Stream: "EVENTS", Consumer: "webhook_my_co_" + id1 + "_events_consent", Messages: 5},
	}
	want := []metrics.Backlog{
		{Stream: "STATUS", Consumer: "recorder", Messages: 1},
		{Stream: "STATUS", Consumer: "webhook_acme_crm_status", Messages: 2},
		{Stream: "STATUS", Consumer: "webhook_acme_api_status", Messages: 7},
		{Stream: "EVENTS", Consumer: "webhook_my_co_api_events_consent", Messages: 5},
	}
	if got := withoutGeneratedIDs(in); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}
