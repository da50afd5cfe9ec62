package hub

// index maps patterns to the clients subscribed to them, for one shard.
// Literal patterns live in a map (the common case, one lookup per event);
// wildcard patterns in a segment trie walked once per event.
//
// An index is not safe for concurrent use; its shard's lock guards it.
type index struct {
	exact map[string]*subSet
	root  *trieNode
	wild  int // wildcard subscriptions in the trie
}

type trieNode struct {
	lit  map[string]*trieNode
	star *trieNode
	gt   *subSet // patterns ending in ">" at this depth
	end  *subSet // patterns ending at this node
}

// subSet is the clients of one pattern, with O(1) add and remove.
type subSet struct {
	pattern string
	list    []*Client
	pos     map[*Client]int
}

func newSubSet(pattern string) *subSet {
	return &subSet{pattern: pattern, pos: make(map[*Client]int, 1)}
}

func (s *subSet) add(c *Client) bool {
	if _, ok := s.pos[c]; ok {
		return false
	}
	s.pos[c] = len(s.list)
	s.list = append(s.list, c)
	return true
}

func (s *subSet) remove(c *Client) bool {
	i, ok := s.pos[c]
	if !ok {
		return false
	}
	last := len(s.list) - 1
	s.list[i] = s.list[last]
	s.pos[s.list[i]] = i
	s.list[last] = nil
	s.list = s.list[:last]
	delete(s.pos, c)
	return true
}

func newIndex() *index {
	return &index{exact: make(map[string]*subSet), root: &trieNode{}}
}

// add subscribes c to p; it reports false if c already was.
func (x *index) add(p Pattern, c *Client) bool {
	if p.Literal() {
		s := x.exact[p.raw]
		if s == nil {
			s = newSubSet(p.raw)
			x.exact[p.raw] = s
		}
		return s.add(c)
	}
	n := x.root
	rest := p.raw
	for {
		seg, r, more := cut(rest)
		if seg == ">" {
			if n.gt == nil {
				n.gt = newSubSet(p.raw)
			}
			if n.gt.add(c) {
				x.wild++
				return true
			}
			return false
		}
		n = n.child(seg)
		if !more {
			break
		}
		rest = r
	}
	if n.end == nil {
		n.end = newSubSet(p.raw)
	}
	if n.end.add(c) {
		x.wild++
		return true
	}
	return false
}

func (n *trieNode) child(seg string) *trieNode {
	if seg == "*" {
		if n.star == nil {
			n.star = &trieNode{}
		}
		return n.star
	}
	if n.lit == nil {
		n.lit = make(map[string]*trieNode)
	}
	c := n.lit[seg]
	if c == nil {
		c = &trieNode{}
		n.lit[seg] = c
	}
	return c
}

// remove unsubscribes c from p and prunes what becomes empty; it reports
// false if c was not subscribed.
func (x *index) remove(p Pattern, c *Client) bool {
	if p.Literal() {
		s := x.exact[p.raw]
		if s == nil || !s.remove(c) {
			return false
		}
		if len(s.list) == 0 {
			delete(x.exact, p.raw)
		}
		return true
	}
	if x.root.remove(p.raw, c) {
		x.wild--
		return true
	}
	return false
}

// remove deletes c from the pattern rest below n, pruning empty nodes on the way back.
func (n *trieNode) remove(rest string, c *Client) bool {
	seg, r, more := cut(rest)
	if seg == ">" {
		if n.gt == nil || !n.gt.remove(c) {
			return false
		}
		if len(n.gt.list) == 0 {
			n.gt = nil
		}
		return true
	}
	var ch *trieNode
	if seg == "*" {
		ch = n.star
	} else {
		ch = n.lit[seg]
	}
	if ch == nil {
		return false
	}
	var ok bool
	if !more {
		if ok = ch.end != nil && ch.end.remove(c); ok && len(ch.end.list) == 0 {
			ch.end = nil
		}
	} else {
		ok = ch.remove(r, c)
	}
	if ok && ch.empty() {
		if seg == "*" {
			n.star = nil
		} else {
			delete(n.lit, seg)
		}
	}
	return ok
}

func (n *trieNode) empty() bool {
	return len(n.lit) == 0 && n.star == nil && n.gt == nil && n.end == nil
}

// match appends to dst every client subscribed to a pattern matching topic.
// A client appears once per matching pattern; the caller deduplicates.
func (x *index) match(topic string, dst []*Client) []*Client {
	if s := x.exact[topic]; s != nil {
		dst = append(dst, s.list...)
	}
	if x.wild > 0 {
		dst = x.root.match(topic, dst)
	}
	return dst
}

func (n *trieNode) match(topic string, dst []*Client) []*Client {
	if n.gt != nil && topic != "" {
		dst = append(dst, n.gt.list...)
	}
	seg, rest, more := cut(topic)
	visit := func(ch *trieNode) {
		if ch == nil {
			return
		}
		if !more {
			if ch.end != nil {
				dst = append(dst, ch.end.list...)
			}
			return
		}
		dst = ch.match(rest, dst)
	}
	if n.lit != nil {
		visit(n.lit[seg])
	}
	visit(n.star)
	return dst
}

// counts adds the subscriber count of every pattern in the index to into.
func (x *index) counts(into map[string]int) {
	for p, s := range x.exact {
		into[p] += len(s.list)
	}
	x.root.counts(into)
}

func (n *trieNode) counts(into map[string]int) {
	if n.gt != nil {
		into[n.gt.pattern] += len(n.gt.list)
	}
	if n.end != nil {
		into[n.end.pattern] += len(n.end.list)
	}
	for _, ch := range n.lit {
		ch.counts(into)
	}
	if n.star != nil {
		n.star.counts(into)
	}
}
