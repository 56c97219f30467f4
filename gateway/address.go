package gateway

import (
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// Channel is a messaging network.
type Channel string

const (
	WhatsApp Channel = "whatsapp"
	Teams    Channel = "teams"
)

// Channels lists the channels Switchboard speaks.
var Channels = []Channel{WhatsApp, Teams}

// Valid reports whether c is a known channel.
func (c Channel) Valid() bool { return c == WhatsApp || c == Teams }

// AddressKind says what an address points at.
type AddressKind string

const (
	KindPhone        AddressKind = "phone"         // WhatsApp: +E164
	KindGroup        AddressKind = "group"         // WhatsApp group JID: 1203…@g.us
	KindTeamsChat    AddressKind = "teams_chat"    // teams:chat:<chat-id>
	KindTeamsChannel AddressKind = "teams_channel" // teams:channel:<team-id>/<channel-id>
	KindTeamsUser    AddressKind = "teams_user"    // teams:user:<aad-object-id>
)

// Address is a normalised recipient or sender. String() gives the canonical form, which is also
// what the blind index is computed over.
type Address struct {
	Channel Channel     `json:"channel"`
	Kind    AddressKind `json:"kind"`
	Value   string      `json:"value"` // +E164, the group JID, the chat id, "<team>/<channel>" or the AAD object id
}

// String returns the canonical text form of the address, as integrators write it.
func (a Address) String() string {
	switch a.Kind {
	case KindTeamsChat:
		return "teams:chat:" + a.Value
	case KindTeamsChannel:
		return "teams:channel:" + a.Value
	case KindTeamsUser:
		return "teams:user:" + a.Value
	}
	return a.Value
}

// IsZero reports whether a is the empty address.
func (a Address) IsZero() bool { return a.Value == "" }

// Masked returns a form of the address that is safe to log: enough to tell two apart at a glance,
// not enough to contact anyone. +4915112345678 → +49******5678.
func (a Address) Masked() string { return MaskIdentifier(a.String()) }

// MaskIdentifier masks a phone number or an id, keeping a short prefix and the last four characters.
func MaskIdentifier(s string) string {
	if strings.HasPrefix(s, "teams:") {
		i := strings.LastIndex(s, ":")
		return s[:i+1] + maskMiddle(s[i+1:], 0, 4)
	}
	if strings.HasPrefix(s, "+") {
		return maskMiddle(s, 3, 4)
	}
	return maskMiddle(s, 0, 4)
}

func maskMiddle(s string, keepHead, keepTail int) string {
	r := []rune(s)
	if len(r) <= keepHead+keepTail+2 {
		keepHead, keepTail = 0, 0
		if len(r) > 4 {
			keepTail = 2
		}
	}
	n := len(r) - keepHead - keepTail
	if n < 6 {
		n = 6
	} else if n > 6 {
		// A fixed-width mask so the length of an id does not leak.
		n = 6
	}
	return string(r[:keepHead]) + strings.Repeat("*", n) + string(r[len(r)-keepTail:])
}

// ParseAddress validates and normalises a recipient for channel. Phone numbers must be in
// international form (a leading +) and are normalised to E.164 with libphonenumber; Teams
// addresses must carry their teams: prefix.
func ParseAddress(channel Channel, to string) (Address, error) {
	to = strings.TrimSpace(to)
	if to == "" {
		return Address{}, FieldErrorf(EMissingField, "to", "a recipient is required")
	}
	switch channel {
	case WhatsApp:
		return parseWhatsApp(to)
	case Teams:
		return parseTeams(to)
	}
	return Address{}, FieldErrorf(EUnknownChannel, "channel", "unknown channel %q: use whatsapp or teams", channel)
}

func parseWhatsApp(to string) (Address, error) {
	if strings.HasSuffix(to, "@g.us") {
		id := strings.TrimSuffix(to, "@g.us")
		if id == "" || strings.Trim(id, "0123456789-") != "" {
			return Address{}, FieldErrorf(EInvalidRecipient, "to", "%q is not a WhatsApp group id (digits@g.us)", to)
		}
		return Address{Channel: WhatsApp, Kind: KindGroup, Value: to}, nil
	}
	e164, err := NormalizePhone(to)
	if err != nil {
		return Address{}, err
	}
	return Address{Channel: WhatsApp, Kind: KindPhone, Value: e164}, nil
}

// NormalizePhone returns the E.164 form of an international phone number, or an
// invalid_recipient error for the field "to".
func NormalizePhone(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "+") {
		return "", FieldErrorf(EInvalidRecipient, "to", "phone numbers must be in international form with a leading + (E.164), e.g. +4915112345678")
	}
	num, err := phonenumbers.Parse(s, "")
	if err != nil || !phonenumbers.IsValidNumber(num) {
		return "", FieldErrorf(EInvalidRecipient, "to", "%s is not a valid phone number", MaskIdentifier(s))
	}
	return phonenumbers.Format(num, phonenumbers.E164), nil
}

func parseTeams(to string) (Address, error) {
	kinds := []struct {
		prefix string
		kind   AddressKind
	}{
		{"teams:chat:", KindTeamsChat},
		{"teams:channel:", KindTeamsChannel},
		{"teams:user:", KindTeamsUser},
	}
	for _, k := range kinds {
		if !strings.HasPrefix(to, k.prefix) {
			continue
		}
		v := strings.TrimPrefix(to, k.prefix)
		if !validTeamsID(v, k.kind) {
			return Address{}, FieldErrorf(EInvalidRecipient, "to", "%q is not a valid %s address", MaskIdentifier(to), strings.TrimSuffix(k.prefix, ":"))
		}
		return Address{Channel: Teams, Kind: k.kind, Value: v}, nil
	}
	return Address{}, FieldErrorf(EInvalidRecipient, "to", "Teams recipients look like teams:chat:<id>, teams:channel:<team-id>/<channel-id> or teams:user:<aad-object-id>")
}

func validTeamsID(v string, kind AddressKind) bool {
	if v == "" || len(v) > 512 || strings.ContainsAny(v, " \t\r\n?#") {
		return false
	}
	if kind == KindTeamsChannel {
		team, channel, ok := strings.Cut(v, "/")
		return ok && team != "" && channel != "" && !strings.Contains(channel, "/")
	}
	return !strings.Contains(v, "/")
}
