package sse

import (
	"encoding/json"
	"sync"

	"github.com/heraldpush/herald/hub"
)

// ResetEvent is the event type of the control event telling a client it
// missed events (SPEC "Control events").
const ResetEvent = "herald.reset"

// SyncedEvent is the event type of the control event ending the state a
// state subscription starts with (SPEC "Keyed topics").
const SyncedEvent = "herald.synced"

// UnsubscribedEvent is the event type of the control event that says the
// control API removed some of the stream's subscriptions.
const UnsubscribedEvent = "herald.unsubscribed"

// frameFormat frames an event: its head is encoded once per process, and
// the envelope and tail follow it unchanged.
//
//	id: CURSOR
//	event: TYPE
//	data: ENVELOPE
//	(blank line)
//
// The envelope is one line of JSON (the hub compacts data at publish), and
// cursors and types never contain a line break, so no field needs splitting.
var frameFormat = hub.NewFormat(func(dst []byte, m *hub.Message) []byte {
	dst = append(dst, "id: "...)
	dst = m.ID.AppendText(dst)
	dst = append(dst, "\nevent: "...)
	dst = append(dst, m.Type...)
	return append(dst, "\ndata: "...)
}, 0, "\n\n")

// pingFrame is the heartbeat: a comment line, ignored by EventSource.
var pingFrame = []byte(": ping\n\n")

// appendReset frames a herald.reset. Its id is the head cursor, so the
// browser's automatic reconnect resumes from there rather than from the
// unusable cursor.
func appendReset(dst []byte, r *hub.Reset) []byte {
	topics := r.Topics
	if topics == nil {
		topics = []string{}
	}
	data, _ := json.Marshal(struct {
		Reason string   `json:"reason"`
		Topics []string `json:"topics"`
	}{r.Reason, topics})
	dst = append(dst, "id: "...)
	dst = r.Cursor.AppendText(dst)
	dst = append(dst, "\nevent: "+ResetEvent+"\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}

// unsubscribedFrame frames a herald.unsubscribed
// (hub.WriterOptions.Unsubscribed): the control API removed these
// subscriptions. It has no id: the position a reconnect resumes from does
// not change. The stream stays open, with its other subscriptions or none:
// ending it would make EventSource reconnect to the same URL and subscribe
// again to what was just removed.
func unsubscribedFrame(patterns []string) []byte {
	data, _ := json.Marshal(struct {
		Topics []string `json:"topics"`
	}{patterns})
	dst := append(make([]byte, 0, 48+len(data)), "event: "+UnsubscribedEvent+"\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}

// syncedFrame frames a herald.synced (hub.SubscribeRequest.Synced): its id
// is the state's position, from which a reconnect resumes.
func syncedFrame(sy hub.Synced) []byte {
	topics := sy.Topics
	if topics == nil {
		topics = []string{}
	}
	data, _ := json.Marshal(struct {
		Topics []string `json:"topics"`
	}{topics})
	dst := append(make([]byte, 0, 64+len(data)), "id: "...)
	dst = sy.Cursor.AppendText(dst)
	dst = append(dst, "\nevent: "+SyncedEvent+"\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}

// startFrame is the first block of a stream opened without a cursor and
// without state (hub.SubscribeRequest.Start): only "id: CURSOR", the
// position the stream starts at. A block without data dispatches no event,
// but EventSource takes its id as lastEventId (HTML, "dispatch the
// event"), so a reconnect before the first event resumes from there
// instead of losing what was published meanwhile.
func startFrame(start hub.Cursor) []byte {
	dst := append(make([]byte, 0, 48), "id: "...)
	dst = start.AppendText(dst)
	return append(dst, "\n\n"...)
}

// appendItem appends the wire form of one queued item.
func appendItem(dst []byte, it hub.Item) []byte {
	switch {
	case it.Msg != nil:
		return it.Msg.Frame(frameFormat).AppendTo(dst)
	case it.Reset != nil:
		return appendReset(dst, it.Reset)
	default:
		return append(dst, it.Raw...) // already a complete frame
	}
}

// directBody is the size from which an event's envelope is written
// straight from the shared message rather than copied into the batch
// buffer: a large event is then never copied per subscriber.
const directBody = 32 << 10

// Batch buffers are shared by all connections and held only for the length
// of one write, so an idle connection owns none. A buffer that grew past
// maxPooled (a large burst) is left to the collector instead of being kept.
const maxPooled = 256 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(bp *[]byte, b []byte) {
	if cap(b) > maxPooled {
		return
	}
	*bp = b[:0]
	bufPool.Put(bp)
}
