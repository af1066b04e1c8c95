package handoff

import "sync"

// smallBuffer is the most a connection keeps between requests of its buffer
// of unanswered bytes (4 KiB, a request header). A larger request borrows
// a maxPending buffer from largeBuffers until its response begins, so that
// an idle connection holds no large buffer, whatever it sent before.
const smallBuffer = 4 << 10

// largeBuffers holds buffers of maxPending bytes (*[]byte, empty).
var largeBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, maxPending)
	return &b
}}

// appendPending appends b to c.pending, which must stay within maxPending;
// c.mu is held.
func (c *conn) appendPending(b []byte) {
	n := len(c.pending) + len(b)
	switch {
	case n <= cap(c.pending):
	case n <= smallBuffer:
		c.pending = append(make([]byte, 0, min(max(2*cap(c.pending), n, 512), smallBuffer)), c.pending...)
	case c.large == nil:
		c.large = largeBuffers.Get().(*[]byte)
		c.pending = append((*c.large)[:0], c.pending...)
	}
	c.pending = append(c.pending, b...)
}

// resetPending empties c.pending, giving a pooled buffer back; c.mu is
// held. Nothing may keep a slice of c.pending past it. After a request
// larger than smallBuffer (its body counted, not kept) the buffer is let
// go too, as a pooled one is: an idle connection keeps only what its
// largest request's header needed.
func (c *conn) resetPending() {
	outgrew := int64(len(c.pending))+c.bodyRead > smallBuffer
	c.lineRead, c.bodyRead = false, 0
	if c.large == nil && !outgrew {
		c.pending = c.pending[:0]
		return
	}
	if c.large != nil {
		*c.large = (*c.large)[:0]
		largeBuffers.Put(c.large)
	}
	c.large, c.pending = nil, nil
}
