package sql

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

// BenchmarkCreateMessage measures accepted messages per second with 64 concurrent callers (as
// many API requests in flight), over 256 recipients whose keys are warm. Each caller's context can
// be cancelled, as an HTTP request's can. It reports msgs/s and the average group-commit batch.
func BenchmarkCreateMessage(b *testing.B) {
	for _, es := range engines() {
		for _, wait := range []time.Duration{0, time.Millisecond} {
			b.Run(fmt.Sprintf("%s/wait=%s", es.name, wait), func(b *testing.B) {
				cfg, dir := es.cfg(b)
				cfg.BatchWait = wait
				e := &env{engine: es.name, cfg: cfg, dir: dir}
				db, _ := e.open(b)
				defer db.Close()
				const recipients = 256
				tos := make([]string, recipients)
				for i := range tos {
					tos[i] = fmt.Sprintf("+49151%08d", 10000000+i)
					create(b, db, newMsg(b, "acme", tos[i], "warm"))
				}
				var n atomic.Int64
				before := db.WriteStats()
				b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
				b.ResetTimer()
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					for pb.Next() {
						i := n.Add(1)
						m := newMsg(b, "acme", tos[i%recipients], "Your invoice 2026-1142 is ready: 129.00 EUR, due on 1 December.")
						m.IdempotencyKey = fmt.Sprintf("bench-%d", i)
						if _, _, created, err := db.CreateMessage(ctx, store.NewMessage{Message: m, RequestHash: "h"}); err != nil || !created {
							b.Fatal(created, err)
						}
					}
				})
				elapsed := time.Since(start)
				b.StopTimer()
				after := db.WriteStats()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
				if batches := after.Batches - before.Batches; batches > 0 {
					b.ReportMetric(float64(after.Ops-before.Ops)/float64(batches), "ops/batch")
				}
			})
		}
	}
}

// BenchmarkApplyStatus measures status events recorded per second, in batches of 256 as the
// recorder applies them: queued, sent (with its channel message id), delivered, read for each
// message, which is what one sandbox send produces.
func BenchmarkApplyStatus(b *testing.B) {
	for _, es := range engines() {
		b.Run(es.name, func(b *testing.B) {
			cfg, dir := es.cfg(b)
			e := &env{engine: es.name, cfg: cfg, dir: dir}
			db, _ := e.open(b)
			defer db.Close()
			ctx := context.Background()
			const batch = 256
			statuses := []gateway.Status{gateway.StatusQueued, gateway.StatusSent, gateway.StatusDelivered, gateway.StatusRead}
			var events []gateway.StatusEvent
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if len(events) == 0 {
					b.StopTimer()
					ids := make([]string, batch/len(statuses))
					for j := range ids {
						m := newMsg(b, "acme", fmt.Sprintf("+49151%08d", 10000000+(i+j)%256), "Your invoice is ready.")
						create(b, db, m)
						ids[j] = m.ID
					}
					for _, st := range statuses {
						for _, id := range ids {
							ev := gateway.StatusEvent{MessageID: id, Tenant: "acme", Status: st}
							if st == gateway.StatusSent {
								ev.ChannelMessageID = "wamid." + id
							}
							events = append(events, ev)
						}
					}
					b.StartTimer()
				}
				n := min(batch, len(events))
				if _, err := db.ApplyStatus(ctx, events[:n]); err != nil {
					b.Fatal(err)
				}
				events = events[n:]
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
