// Package whatsapptest holds the test doubles that the WhatsApp adapter's tests and the CLI's
// tests share.
package whatsapptest

import (
	"slices"
	"sync"
)

// Handlers is whatsmeow's event-handler registry, for fake clients: handlers run in the order
// they were added, and the first that fails stops the dispatch, as whatsmeow's dispatchEvent does
// (whatsmeow then does not acknowledge the event, and the server delivers it again).
type Handlers struct {
	mu   sync.Mutex
	next uint32
	hs   []handler
}

type handler struct {
	id uint32
	fn func(evt any) bool
}

// AddEventHandler registers fn and returns its id.
func (h *Handlers) AddEventHandler(fn func(evt any) bool) uint32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	h.hs = append(h.hs, handler{h.next, fn})
	return h.next
}

// RemoveEventHandler removes the handler with id and reports whether there was one.
func (h *Handlers) RemoveEventHandler(id uint32) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := slices.IndexFunc(h.hs, func(x handler) bool { return x.id == id })
	if i < 0 {
		return false
	}
	h.hs = slices.Delete(h.hs, i, i+1)
	return true
}

// Emit dispatches evt and reports whether every handler succeeded.
func (h *Handlers) Emit(evt any) bool {
	h.mu.Lock()
	hs := slices.Clone(h.hs)
	h.mu.Unlock()
	for _, x := range hs {
		if !x.fn(evt) {
			return false
		}
	}
	return true
}
