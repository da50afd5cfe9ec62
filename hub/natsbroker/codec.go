package natsbroker

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heraldpush/herald/hub"
)

// encode turns a normalized draft into a stream message.
func encode(prefix string, d hub.Draft, when time.Time) *nats.Msg {
	h := nats.Header{hdrTime: []string{strconv.FormatInt(when.UnixMicro(), 10)}}
	if d.Type != hub.DefaultType {
		h[hdrType] = []string{d.Type}
	}
	if d.Key != "" {
		h[hdrKey] = []string{d.Key}
	}
	return &nats.Msg{Subject: prefix + d.Topic, Header: h, Data: d.Data}
}

// batchInfo is an event's place in a batch of several.
type batchInfo struct {
	id           string
	index, count uint64
}

// start is the position of the batch's first event, given the position of
// this one: a batch is stored contiguously.
func (bi *batchInfo) start(seq uint64) uint64 { return seq - bi.index }

// last is the position of the batch's last event.
func (bi *batchInfo) last(seq uint64) uint64 { return bi.start(seq) + bi.count - 1 }

func parseBatch(v string) (*batchInfo, error) {
	id, rest, ok1 := strings.Cut(v, " ")
	is, ns, ok2 := strings.Cut(rest, " ")
	i, err1 := strconv.ParseUint(is, 10, 64)
	n, err2 := strconv.ParseUint(ns, 10, 64)
	if !ok1 || !ok2 || err1 != nil || err2 != nil || id == "" || n < 2 || i >= n {
		return nil, fmt.Errorf("bad %s header %q", hdrBatch, v)
	}
	return &batchInfo{id: id, index: i, count: n}, nil
}

// decode turns a stored message into a hub message (and its batch place,
// nil for a single event).
func decode(epoch string, seq uint64, subject string, h nats.Header, data []byte, prefix string) (*hub.Message, *batchInfo, error) {
	topic, ok := strings.CutPrefix(subject, prefix)
	if !ok || topic == "" {
		return nil, nil, fmt.Errorf("subject %q is not under %q", subject, prefix)
	}
	micros, err := strconv.ParseInt(h.Get(hdrTime), 10, 64)
	if err != nil {
		return nil, nil, errors.New("no " + hdrTime + " header")
	}
	typ := h.Get(hdrType)
	if typ == "" {
		typ = hub.DefaultType
	}
	var bi *batchInfo
	if v := h.Get(hdrBatch); v != "" {
		if bi, err = parseBatch(v); err != nil {
			return nil, nil, err
		}
		if bi.index >= seq {
			return nil, nil, fmt.Errorf("batch index %d at position %d", bi.index, seq)
		}
	}
	if len(data) == 0 {
		data = []byte("null")
	}
	return hub.NewMessage(hub.Event{
		ID:    hub.Cursor{Epoch: epoch, Seq: seq},
		Topic: topic,
		Type:  typ,
		Key:   h.Get(hdrKey),
		Data:  data,
		Time:  time.UnixMicro(micros).UTC(),
	}), bi, nil
}
