package api

import (
	"sync"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// addressCache remembers parsed recipients. Validating a phone number with libphonenumber costs
// more CPU than the rest of an accept together, and integrators send to the same people again
// and again. Only valid addresses are kept; the oldest half is dropped when it is full.
type addressCache struct {
	mu    sync.Mutex
	max   int
	addrs map[addressKey]gateway.Address
	order []addressKey
}

type addressKey struct {
	channel gateway.Channel
	raw     string
}

const maxCachedAddresses = 1 << 15

func newAddressCache(max int) *addressCache {
	return &addressCache{max: max, addrs: make(map[addressKey]gateway.Address, max)}
}

// parse is gateway.ParseAddress with a memory.
func (c *addressCache) parse(ch gateway.Channel, raw string) (gateway.Address, error) {
	k := addressKey{ch, raw}
	c.mu.Lock()
	a, ok := c.addrs[k]
	c.mu.Unlock()
	if ok {
		return a, nil
	}
	a, err := gateway.ParseAddress(ch, raw)
	if err != nil || len(raw) > 256 {
		return a, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.addrs[k]; !ok {
		if len(c.order) >= c.max {
			drop := c.order[:c.max/2]
			for _, old := range drop {
				delete(c.addrs, old)
			}
			c.order = append(c.order[:0:0], c.order[c.max/2:]...)
		}
		c.addrs[k] = a
		c.order = append(c.order, k)
	}
	return a, nil
}
