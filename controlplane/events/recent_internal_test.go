package events

import (
	"slices"
	"testing"
)

func seqsOf(evs []Envelope) []int64 {
	var out []int64
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

func TestRecent(t *testing.T) {
	var r recent
	env := func(seqs ...int64) []Envelope {
		var out []Envelope
		for _, s := range seqs {
			out = append(out, Envelope{Seq: s, Payload: []byte(`{}`)})
		}
		return out
	}
	r.add(env(4, 5))
	r.add(env(2, 3))
	r.add(env(3, 7)) // 3 again: kept once
	for _, c := range []struct {
		cursor, limit int
		want          []int64
		ahead         bool
	}{
		{1, 10, []int64{2, 3, 4, 5}, false}, // up to the gap at 6
		{1, 2, []int64{2, 3}, false},
		{0, 10, nil, true}, // 1 is in the outbox only
		{5, 10, nil, true}, // 6 is in the outbox only
		{6, 10, []int64{7}, false},
		{7, 10, nil, false}, // caught up
	} {
		got, ahead := r.after(int64(c.cursor), c.limit)
		if g := seqsOf(got); !slices.Equal(g, c.want) || ahead != c.ahead {
			t.Errorf("after(%d, %d) = %v, ahead %v; want %v, ahead %v", c.cursor, c.limit, g, ahead, c.want, c.ahead)
		}
	}
	// What after returns is a copy: a handler changing it changes nothing
	// here.
	got, _ := r.after(1, 1)
	got[0].Payload[0] = 'x'
	if again, _ := r.after(1, 1); string(again[0].Payload) != `{}` {
		t.Errorf("payload changed through a returned envelope: %s", again[0].Payload)
	}

	// Bounded: the oldest go first.
	var many []Envelope
	for s := int64(100); s < 100+maxRecent+10; s++ {
		many = append(many, env(s)...)
	}
	r.add(many)
	if n := len(r.evs); n != maxRecent {
		t.Fatalf("%d events held, want at most %d", n, maxRecent)
	}
	if got, ahead := r.after(99, 1); len(got) != 0 || !ahead {
		t.Errorf("the oldest were kept: after(99) = %v, ahead %v", seqsOf(got), ahead)
	}
	if got, _ := r.after(109, 1); len(got) != 1 || got[0].Seq != 110 {
		t.Errorf("after(109) = %v, want [110]", seqsOf(got))
	}
}
