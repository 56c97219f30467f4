package bus

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Headers of a dead letter. The original message's own headers (except Nats-*) are kept too.
const (
	HeaderDeadSubject    = "Sb-Dead-Subject"    // the subject it was published on
	HeaderDeadMsgID      = "Sb-Dead-Msg-Id"     // its Nats-Msg-Id
	HeaderDeadStream     = "Sb-Dead-Stream"     // stream and consumer that gave up
	HeaderDeadConsumer   = "Sb-Dead-Consumer"   //
	HeaderDeadStreamSeq  = "Sb-Dead-Stream-Seq" // its sequence in that stream
	HeaderDeadDeliveries = "Sb-Dead-Deliveries" // attempts made
	HeaderDeadError      = "Sb-Dead-Error"      // the last error's text
	HeaderDeadCode       = "Sb-Dead-Code"       // its gateway error code
	HeaderDeadTime       = "Sb-Dead-Time"       // when it was dead-lettered, RFC 3339

	// HeaderReplayOf marks a replayed message with the dead letter's sequence.
	HeaderReplayOf = "Sb-Replay-Of"
)

const maxErrorHeader = 1024

// DeadLetter is a message a consumer gave up on.
type DeadLetter struct {
	Seq        uint64 // in the DEADLETTER stream; what Replay takes
	Subject    string // original subject
	MsgID      string // original Nats-Msg-Id
	Stream     string
	Consumer   string
	StreamSeq  uint64 // sequence in the original stream
	Deliveries uint64
	Error      string
	Code       string
	Time       time.Time
	Header     nats.Header // the original message's headers (Nats-* and Sb-Dead-* removed)
	Data       []byte
}

// deadLetter stores m in DEADLETTER and then terminates it in its stream. If the dead letter
// cannot be stored, m is nakked instead: its next delivery is over MaxDeliver and tries again.
func (b *Bus) deadLetter(ctx context.Context, s spec, m *Msg, cause error, log zerolog.Logger) {
	h := nats.Header{}
	for k, v := range m.Header {
		if !strings.HasPrefix(k, "Nats-") && !strings.HasPrefix(k, "Sb-Dead-") {
			h[k] = v
		}
	}
	h.Set(HeaderDeadSubject, m.Subject)
	h.Set(HeaderDeadMsgID, m.MsgID)
	h.Set(HeaderDeadStream, s.stream)
	h.Set(HeaderDeadConsumer, s.durable)
	h.Set(HeaderDeadStreamSeq, strconv.FormatUint(m.StreamSeq, 10))
	h.Set(HeaderDeadDeliveries, strconv.FormatUint(m.NumDelivered, 10))
	h.Set(HeaderDeadError, headerValue(cause.Error(), maxErrorHeader))
	h.Set(HeaderDeadCode, gateway.ErrorCode(cause))
	h.Set(HeaderDeadTime, time.Now().UTC().Format(time.RFC3339Nano))

	octx, cancel := opContext(ctx)
	defer cancel()
	err := b.PublishMsg(octx, Outgoing{
		Subject: DeadLetterSubject(s.stream, s.durable),
		// Deterministic: a retry after a crash between publish and Term is deduplicated.
		MsgID:  "dl:" + s.stream + ":" + s.durable + ":" + strconv.FormatUint(m.StreamSeq, 10),
		Data:   m.Data,
		Header: h,
	})
	ev := log.Warn().Uint64("seq", m.StreamSeq).Str("msg_id", m.MsgID).Uint64("delivery", m.NumDelivered).
		Str("code", gateway.ErrorCode(cause)).AnErr("cause", cause)
	if err != nil {
		ev.Err(err).Msg("dead letter not stored; will retry")
		if nerr := m.raw.NakWithDelay(s.nakDelay(m.NumDelivered)); nerr != nil {
			log.Warn().Err(nerr).Uint64("seq", m.StreamSeq).Msg("nak failed")
		}
		return
	}
	// Term like DoubleAck: wait for the server's confirmation (jetstream.Msg has no sync Term).
	body := []byte("+TERM " + headerValue(cause.Error(), 256))
	if _, err := b.nc.RequestWithContext(octx, m.raw.Reply(), body); err != nil {
		log.Warn().Err(err).Uint64("seq", m.StreamSeq).Msg("term not confirmed; the message may be dead-lettered again (deduplicated)")
	}
	ev.Msg("message dead-lettered")
}

// DeadLetters lists up to limit dead letters (100 when limit <= 0), oldest first.
func (b *Bus) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	return b.DeadLettersAfter(ctx, 0, limit)
}

// DeadLettersAfter lists up to limit dead letters with a sequence above after, oldest first (for
// paging).
func (b *Bus) DeadLettersAfter(ctx context.Context, after uint64, limit int) ([]DeadLetter, error) {
	if limit <= 0 {
		limit = 100
	}
	st, err := b.js.Stream(ctx, StreamDeadLetter)
	if err != nil {
		return nil, notFoundOr(err, "bus: dead letters")
	}
	var out []DeadLetter
	seq := after + 1
	for len(out) < limit {
		raw, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(prefixDead+".>"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return out, gateway.WrapError(gateway.EUnavailable, err, "bus: read dead letter after %d", seq)
		}
		out = append(out, toDeadLetter(raw))
		seq = raw.Sequence + 1
	}
	return out, nil
}

// DeadLetter returns one dead letter by its sequence (gateway.ENotFound when there is none).
func (b *Bus) DeadLetter(ctx context.Context, seq uint64) (DeadLetter, error) {
	raw, err := b.getDeadLetter(ctx, seq)
	if err != nil {
		return DeadLetter{}, err
	}
	return toDeadLetter(raw), nil
}

func (b *Bus) getDeadLetter(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	st, err := b.js.Stream(ctx, StreamDeadLetter)
	if err != nil {
		return nil, notFoundOr(err, "bus: dead letters")
	}
	raw, err := st.GetMsg(ctx, seq)
	if err != nil {
		return nil, notFoundOr(err, "bus: dead letter %d", seq)
	}
	return raw, nil
}

// Replay republishes dead letter seq to its original subject and deletes it. The copy gets a
// fresh Nats-Msg-Id ("<original>:replay:<seq>"), so the duplicate window does not drop it, while
// repeating the same Replay after a failure is still deduplicated. It carries HeaderReplayOf.
func (b *Bus) Replay(ctx context.Context, seq uint64) error {
	raw, err := b.getDeadLetter(ctx, seq)
	if err != nil {
		return err
	}
	dl := toDeadLetter(raw)
	if dl.Subject == "" {
		return gateway.Errorf(gateway.EInvalidField, "bus: dead letter %d has no original subject", seq)
	}
	h := nats.Header{}
	for k, v := range dl.Header {
		h[k] = v
	}
	h.Set(HeaderReplayOf, strconv.FormatUint(seq, 10))
	msgID := dl.MsgID
	if msgID == "" {
		msgID = "dl"
	}
	if err := b.PublishMsg(ctx, Outgoing{
		Subject: dl.Subject,
		MsgID:   msgID + ":replay:" + strconv.FormatUint(seq, 10),
		Data:    dl.Data,
		Header:  h,
	}); err != nil {
		return err
	}
	st, err := b.js.Stream(ctx, StreamDeadLetter)
	if err != nil {
		return notFoundOr(err, "bus: dead letters")
	}
	if err := st.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return gateway.WrapError(gateway.EUnavailable, err, "bus: delete dead letter %d after replay", seq)
	}
	b.log.Info().Uint64("dead_letter", seq).Str("subject", dl.Subject).Str("msg_id", dl.MsgID).Msg("dead letter replayed")
	return nil
}

// ReplayAll replays every dead letter present when it starts and returns how many it replayed.
func (b *Bus) ReplayAll(ctx context.Context) (int, error) {
	var n int
	var after uint64
	for {
		page, err := b.DeadLettersAfter(ctx, after, 100)
		if err != nil {
			return n, err
		}
		if len(page) == 0 {
			return n, nil
		}
		for _, dl := range page {
			if err := b.Replay(ctx, dl.Seq); err != nil {
				return n, err
			}
			n++
			after = dl.Seq
		}
	}
}

func toDeadLetter(raw *jetstream.RawStreamMsg) DeadLetter {
	dl := DeadLetter{Seq: raw.Sequence, Data: raw.Data, Time: raw.Time, Header: nats.Header{}}
	for k, v := range raw.Header {
		switch {
		case strings.HasPrefix(k, "Sb-Dead-"), strings.HasPrefix(k, "Nats-"):
		default:
			dl.Header[k] = v
		}
	}
	get := raw.Header.Get
	dl.Subject = get(HeaderDeadSubject)
	dl.MsgID = get(HeaderDeadMsgID)
	dl.Stream = get(HeaderDeadStream)
	dl.Consumer = get(HeaderDeadConsumer)
	dl.StreamSeq, _ = strconv.ParseUint(get(HeaderDeadStreamSeq), 10, 64)
	dl.Deliveries, _ = strconv.ParseUint(get(HeaderDeadDeliveries), 10, 64)
	dl.Error = get(HeaderDeadError)
	dl.Code = get(HeaderDeadCode)
	if t, err := time.Parse(time.RFC3339Nano, get(HeaderDeadTime)); err == nil {
		dl.Time = t
	}
	return dl
}
