package whatsapp

import (
	"context"
	"fmt"
	"time"

	"go.mau.fi/whatsmeow/types"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

var _ adapters.GroupSizer = (*Adapter)(nil)

// groupSizeTTL bounds how long a group's member count is reused: a message's status waits for
// the members it went to, and membership changes slowly.
const groupSizeTTL = 10 * time.Minute

// maxCachedGroups bounds the cache of member counts.
const maxCachedGroups = 1024

type groupSize struct {
	n  int
	at time.Time
}

// GroupSize implements adapters.GroupSizer: the group's members other than this account (by
// phone number or LID, whichever the group uses), asked of WhatsApp and reused for a while.
func (a *Adapter) GroupSize(ctx context.Context, group gateway.Address) (int, error) {
	jid, err := recipientJID(group)
	if err != nil || jid.Server != types.GroupServer {
		return 0, err
	}
	now := a.clock.Now()
	a.mu.Lock()
	cached, ok := a.groups[jid.User]
	cli, dev := a.client, a.device
	a.mu.Unlock()
	if ok && now.Sub(cached.at) < groupSizeTTL {
		return cached.n, nil
	}
	if cli == nil {
		return 0, fmt.Errorf("whatsapp: no client to ask for the group's members")
	}
	info, err := cli.GetGroupInfo(ctx, jid)
	if err != nil {
		return 0, fmt.Errorf("whatsapp: group info: %w", err)
	}
	var own, ownLID string
	if dev != nil {
		own, ownLID = dev.GetJID().User, dev.GetLID().User
	}
	n := 0
	for _, p := range info.Participants {
		if u := p.JID.User; u != "" && (u == own || u == ownLID || p.PhoneNumber.User == own || p.LID.User == ownLID && ownLID != "") {
			continue
		}
		n++
	}
	a.mu.Lock()
	if len(a.groups) >= maxCachedGroups {
		clear(a.groups) // counts are cheap to ask again; a bound matters more than a hit rate
	}
	a.groups[jid.User] = groupSize{n: n, at: now}
	a.mu.Unlock()
	return n, nil
}
