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

	// Bounded: the oldest go first, a quarter of the bound at a time.
	const past = maxRecent + maxRecent/4 + 1 // one over: trimmed to maxRecent
	r = recent{}
	for s := int64(100); s < 100+past; s++ {
		r.add(env(s))
		if n := len(r.evs); n > maxRecent+maxRecent/4 {
			t.Fatalf("%d events held, want at most %d", n, maxRecent+maxRecent/4)
		}
	}
	if n := len(r.evs); n != maxRecent {
		t.Fatalf("%d events held after the trim, want %d", n, maxRecent)
	}
	first := int64(100 + past - maxRecent)
	if got, ahead := r.after(first-2, 1); len(got) != 0 || !ahead {
		t.Errorf("the oldest were kept: after(%d) = %v, ahead %v", first-2, seqsOf(got), ahead)
	}
	if got, _ := r.after(first-1, 1); len(got) != 1 || got[0].Seq != first {
		t.Errorf("after(%d) = %v, want [%d]", first-1, seqsOf(got), first)
	}
}
