package hub

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestValidateTopic(t *testing.T) {
	cases := []struct {
		topic string
		ok    bool
	}{
		{"orders", true},
		{"orders.42", true},
		{"dash.cpu.node-1", true},
		{"A-Z_a-z.0-9", true},
		{"_", true},
		{"-", true},
		{strings.Repeat("a", 255), true},
		{strings.Repeat("a.", 127) + "a", true}, // 255 bytes, 128 segments
		{strings.Repeat("a", 256), false},
		{strings.Repeat("a.", 127) + "ab", false}, // 256 bytes
		{"", false},
		{".", false},
		{"a..b", false},
		{".a", false},
		{"a.", false},
		{"a b", false},
		{"a/b", false},
		{"a:b", false},
		{"a\x00", false},
		{"é", false},
		{"a.\xff", false},
		{"*", false},
		{">", false},
		{"a.*", false},
		{"a.>", false},
		{"a*", false},
		{"*a", false},
		{"a.b>", false},
		{">>", false},
	}
	for _, c := range cases {
		err := ValidateTopic(c.topic)
		if (err == nil) != c.ok {
			t.Errorf("ValidateTopic(%q) = %v, want ok=%v", c.topic, err, c.ok)
			continue
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrInvalidTopic) || errors.Is(err, ErrInvalidPattern) {
			t.Errorf("ValidateTopic(%q) error %v does not match ErrInvalidTopic only", c.topic, err)
		}
		var ne *NameError
		if !errors.As(err, &ne) || ne.Name != c.topic || ne.Pattern || ne.Reason == "" {
			t.Errorf("ValidateTopic(%q) error %#v is not a NameError naming it", c.topic, err)
		}
		if !strings.HasPrefix(err.Error(), "invalid topic ") {
			t.Errorf("ValidateTopic(%q) message %q", c.topic, err.Error())
		}
	}
}

func TestParsePattern(t *testing.T) {
	cases := []struct {
		pattern string
		ok      bool
		literal bool
	}{
		{"orders", true, true},
		{"orders.42", true, true},
		{"*", true, false},
		{">", true, false},
		{"orders.*", true, false},
		{"*.b", true, false},
		{"orders.>", true, false},
		{"*.>", true, false},
		{"*.*", true, false},
		{"a.*.c.>", true, false},
		{strings.Repeat("a", 255), true, true},
		{strings.Repeat("*.", 127) + ">", true, false}, // 255 bytes
		{strings.Repeat("a", 256), false, false},
		{strings.Repeat("*.", 127) + "*>", false, false},
		{"", false, false},
		{".", false, false},
		{"a..b", false, false},
		{".a", false, false},
		{"a.", false, false},
		{"a.>.", false, false},
		{">.a", false, false},
		{"a.>.b", false, false},
		{">.>", false, false},
		{">>", false, false},
		{"**", false, false},
		{"a*", false, false},
		{"*a", false, false},
		{"a.b*", false, false},
		{"a.*b.c", false, false},
		{"a>", false, false},
		{"a b", false, false},
		{"a.$", false, false},
		{"> ", false, false},
		{"é.*", false, false},
	}
	for _, c := range cases {
		p, err := ParsePattern(c.pattern)
		if (err == nil) != c.ok {
			t.Errorf("ParsePattern(%q) = %v, want ok=%v", c.pattern, err, c.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidPattern) || errors.Is(err, ErrInvalidTopic) {
				t.Errorf("ParsePattern(%q) error %v does not match ErrInvalidPattern only", c.pattern, err)
			}
			var ne *NameError
			if !errors.As(err, &ne) || ne.Name != c.pattern || !ne.Pattern {
				t.Errorf("ParsePattern(%q) error %#v is not a NameError naming it", c.pattern, err)
			}
			if p != (Pattern{}) {
				t.Errorf("ParsePattern(%q) failed but returned %+v", c.pattern, p)
			}
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("MustPattern(%q) did not panic", c.pattern)
					}
				}()
				MustPattern(c.pattern)
			}()
			continue
		}
		if p.String() != c.pattern || p.Literal() != c.literal {
			t.Errorf("ParsePattern(%q) = %q literal %v, want literal %v", c.pattern, p.String(), p.Literal(), c.literal)
		}
		// A literal pattern is exactly a topic.
		if (ValidateTopic(c.pattern) == nil) != c.literal {
			t.Errorf("%q: literal %v but ValidateTopic = %v", c.pattern, c.literal, ValidateTopic(c.pattern))
		}
	}
	// Long names are shortened in messages, never in Name.
	long := strings.Repeat("x", 300)
	err := ValidateTopic(long)
	var ne *NameError
	if !errors.As(err, &ne) || ne.Name != long || len(err.Error()) > 150 {
		t.Errorf("long name error: %q", err)
	}
}

// matchCases is the SPEC's wildcard semantics: "*" is exactly one segment,
// a final ">" is one or more segments.
var matchCases = []struct {
	pattern string
	topic   string
	want    bool
}{
	{"orders.*", "orders", false},
	{"orders.*", "orders.1", true},
	{"orders.*", "orders.1.2", false},
	{"orders.*", "other.1", false},
	{"orders.*", "ordersx.1", false},
	{"orders.>", "orders", false},
	{"orders.>", "orders.1", true},
	{"orders.>", "orders.1.2", true},
	{"orders.>", "orders.1.2.3.4", true},
	{"orders.>", "ordersx.1", false},
	{"orders.>", "order.1", false},
	{"*.b", "a.b", true},
	{"*.b", "b", false},
	{"*.b", "a.c", false},
	{"*.b", "a.b.c", false},
	{"*.b", "b.b", true},
	{">", "a", true},
	{">", "a.b", true},
	{">", "a.b.c", true},
	{"*", "a", true},
	{"*", "a.b", false},
	{"*.*", "a.b", true},
	{"*.*", "a", false},
	{"*.*", "a.b.c", false},
	{"*.>", "a", false},
	{"*.>", "a.b", true},
	{"*.>", "a.b.c", true},
	{"a.*.c", "a.b.c", true},
	{"a.*.c", "a.b.d", false},
	{"a.*.c", "a.c", false},
	{"a.*.c", "a.b.c.d", false},
	{"a.*.>", "a.b", false},
	{"a.*.>", "a.b.c", true},
	{"a.*.>", "x.b.c", false},
	{"*.*.*", "a.b.c", true},
	{"orders", "orders", true},
	{"orders", "orders.1", false},
	{"orders", "order", false},
	{"orders.1", "orders.1", true},
	{"orders.1", "orders.10", false},
	{"orders.10", "orders.1", false},
	{"a.b", "a.b.c", false},
	{"a.b.c", "a.b", false},
	{"Orders", "orders", false},
}

// refMatch is an independent reference for the matching rules, written
// the obvious way (split and compare), to check Pattern.Match and the index.
func refMatch(pattern, topic string) bool {
	ps, ts := strings.Split(pattern, "."), strings.Split(topic, ".")
	for i, p := range ps {
		if p == ">" {
			return i == len(ps)-1 && len(ts) > i
		}
		if i >= len(ts) || (p != "*" && p != ts[i]) {
			return false
		}
	}
	return len(ps) == len(ts)
}

func TestPatternMatch(t *testing.T) {
	for _, c := range matchCases {
		if got := refMatch(c.pattern, c.topic); got != c.want {
			t.Fatalf("reference matcher disagrees with the table on %q vs %q", c.pattern, c.topic)
		}
		if got := MustPattern(c.pattern).Match(c.topic); got != c.want {
			t.Errorf("%q.Match(%q) = %v, want %v", c.pattern, c.topic, got, c.want)
		}
	}
	if (Pattern{}).Match("a") {
		t.Error("the zero Pattern matched")
	}
}

// TestIndexMatchTable checks the index against the same table: one client
// per pattern, all patterns in one index, so shared trie paths interact.
func TestIndexMatchTable(t *testing.T) {
	x := newIndex()
	clients := map[string]*Client{}
	for _, c := range matchCases {
		if clients[c.pattern] == nil {
			clients[c.pattern] = &Client{id: uint64(len(clients) + 1)}
			if !x.add(MustPattern(c.pattern), clients[c.pattern]) {
				t.Fatalf("add(%q) reported a duplicate", c.pattern)
			}
		}
	}
	for _, c := range matchCases {
		got := slices.Contains(x.match(c.topic, nil), clients[c.pattern])
		if got != c.want {
			t.Errorf("index: %q matching %q = %v, want %v", c.pattern, c.topic, got, c.want)
		}
	}
	// Every topic of the table against every pattern: the index returns
	// exactly the clients of the matching patterns, each once.
	for _, c := range matchCases {
		var want []uint64
		for p, cl := range clients {
			if refMatch(p, c.topic) {
				want = append(want, cl.id)
			}
		}
		var got []uint64
		for _, cl := range x.match(c.topic, nil) {
			got = append(got, cl.id)
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("index.match(%q) = %v, want %v", c.topic, got, want)
		}
	}
}

// TestIndexProperty builds random indexes over a small alphabet (so
// patterns share trie paths and collide often) and compares index.match with
// a brute-force match over a model, after adds, after random removals, and
// after removing everything (which must prune the trie to nothing).
func TestIndexProperty(t *testing.T) {
	segs := []string{"a", "b", "c"}
	randTopic := func(r *rand.Rand) string {
		n := 1 + r.IntN(4)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = segs[r.IntN(len(segs))]
		}
		return strings.Join(parts, ".")
	}
	randPattern := func(r *rand.Rand) string {
		n := 1 + r.IntN(4)
		parts := make([]string, n)
		for i := range parts {
			switch k := r.IntN(6); {
			case k == 0:
				parts[i] = "*"
			case k == 1 && i == n-1:
				parts[i] = ">"
			default:
				parts[i] = segs[r.IntN(len(segs))]
			}
		}
		return strings.Join(parts, ".")
	}
	type sub struct {
		p string
		c *Client
	}
	for seed := uint64(1); seed <= 40; seed++ {
		r := rand.New(rand.NewPCG(seed, seed*7919))
		x := newIndex()
		pool := make([]*Client, 12)
		for i := range pool {
			pool[i] = &Client{id: uint64(i + 1)}
		}
		model := map[sub]bool{}
		check := func(stage string) {
			t.Helper()
			for range 60 {
				topic := randTopic(r)
				want := map[*Client]int{}
				for s := range model {
					if refMatch(s.p, topic) {
						want[s.c]++
					}
				}
				got := map[*Client]int{}
				for _, c := range x.match(topic, nil) {
					got[c]++
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("seed %d %s: match(%q) = %v, want %v", seed, stage, topic, got, want)
				}
				for s := range model {
					if MustPattern(s.p).Match(topic) != refMatch(s.p, topic) {
						t.Fatalf("seed %d: %q.Match(%q) disagrees with the reference", seed, s.p, topic)
					}
				}
			}
			counts := map[string]int{}
			x.counts(counts)
			want := map[string]int{}
			for s := range model {
				want[s.p]++
			}
			if fmt.Sprint(counts) != fmt.Sprint(want) {
				t.Fatalf("seed %d %s: counts = %v, want %v", seed, stage, counts, want)
			}
		}
		for range 150 {
			s := sub{randPattern(r), pool[r.IntN(len(pool))]}
			if got := x.add(MustPattern(s.p), s.c); got == model[s] {
				t.Fatalf("seed %d: add(%q, %d) = %v with the subscription already present = %v", seed, s.p, s.c.id, got, model[s])
			}
			model[s] = true
		}
		check("after adds")
		for range 200 {
			// Half of these are not subscribed: remove must say so and change nothing.
			s := sub{randPattern(r), pool[r.IntN(len(pool))]}
			if got := x.remove(MustPattern(s.p), s.c); got != model[s] {
				t.Fatalf("seed %d: remove(%q, %d) = %v, subscribed = %v", seed, s.p, s.c.id, got, model[s])
			}
			delete(model, s)
		}
		for s := range model {
			if r.IntN(2) == 0 {
				if !x.remove(MustPattern(s.p), s.c) {
					t.Fatalf("seed %d: remove(%q, %d) of a subscription = false", seed, s.p, s.c.id)
				}
				delete(model, s)
			}
		}
		check("after removals")
		for s := range model {
			if !x.remove(MustPattern(s.p), s.c) {
				t.Fatalf("seed %d: remove(%q, %d) of a subscription = false", seed, s.p, s.c.id)
			}
			delete(model, s)
		}
		check("after removing all")
		if len(x.exact) != 0 || x.wild != 0 || !x.root.empty() {
			t.Fatalf("seed %d: empty index not pruned: %d exact, wild %d, root %+v", seed, len(x.exact), x.wild, x.root)
		}
	}
}

func TestPatternCovers(t *testing.T) {
	cases := []struct {
		p, q string
		want bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.c", false},
		{"a.*", "a.b", true},
		{"a.*", "a.*", true},
		{"a.*", "a.>", false},
		{"a.*", "a", false},
		{"a.*", "a.b.c", false},
		{"a.>", "a.b", true},
		{"a.>", "a.*.c", true},
		{"a.>", "a.>", true},
		{"a.>", "a", false},
		{"a.>", "b.c", false},
		{">", "a", true},
		{">", "*.>", true},
		{"*", "a", true},
		{"*", "a.b", false},
		{"*.b", "a.*", false},
		{"a.b", "a.*", false},
		{"a.b", "*.b", false},
		{"*.*", "a.*", true},
		{"*.>", "a", false},
		{"*.>", "a.b.c", true},
	}
	for _, c := range cases {
		if got := MustPattern(c.p).Covers(MustPattern(c.q)); got != c.want {
			t.Errorf("%q covers %q = %v, want %v", c.p, c.q, got, c.want)
		}
	}
	if (Pattern{}).Covers(MustPattern("a")) || MustPattern(">").Covers(Pattern{}) {
		t.Error("the zero Pattern covers or is covered")
	}
}
