package events

import (
	"cmp"
	"slices"
	"sync"
)

// maxRecent bounds how many committed events the dispatcher keeps in
// memory for subscribers that keep up (up to a quarter more between
// trims); one that falls further behind reads the outbox.
const maxRecent = 4096

// recent holds the events this process committed lately, as the store
// returned them, ordered by seq. A subscriber that is caught up takes the
// next ones from here instead of reading the outbox once per commit, which
// under load is a query per commit and subscriber. The outbox stays the
// truth: a subscriber reads it whenever the next event it needs is not
// here (it was committed by another instance over the same database, or
// dropped from here), when the events came with a bare Notify, and at
// every poll.
type recent struct {
	mu  sync.Mutex
	evs []Envelope
}

// add keeps evs, committed, in seq order.
func (r *recent) add(evs []Envelope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range evs {
		// Callers hand in their commits concurrently, so a batch may
		// come after a later one: insert it in its place.
		i, found := slices.BinarySearchFunc(r.evs, e.Seq, bySeq)
		if found {
			continue
		}
		r.evs = slices.Insert(r.evs, i, e)
	}
	// Past the bound by a quarter, down to it: the oldest go a quarter
	// of the bound at a time, not one copy of the whole for each add.
	if len(r.evs) > maxRecent+maxRecent/4 {
		r.evs = slices.Delete(r.evs, 0, len(r.evs)-maxRecent)
	}
}

func bySeq(e Envelope, seq int64) int { return cmp.Compare(e.Seq, seq) }

// after returns up to limit events that follow cursor without a gap
// (cursor+1, cursor+2, ...), copied. ahead reports that events after
// cursor are held but not cursor+1: what lies between is in the outbox
// only.
func (r *recent) after(cursor int64, limit int) (out []Envelope, ahead bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, _ := slices.BinarySearchFunc(r.evs, cursor+1, bySeq)
	if i == len(r.evs) {
		return nil, false
	}
	for next := cursor + 1; i < len(r.evs) && r.evs[i].Seq == next && len(out) < limit; i, next = i+1, next+1 {
		out = append(out, r.evs[i].clone())
	}
	return out, len(out) == 0
}

// clone copies what a handler could change in place.
func (e Envelope) clone() Envelope {
	e.Payload = slices.Clone(e.Payload)
	if e.Actor != nil {
		a := *e.Actor
		e.Actor = &a
	}
	return e
}
