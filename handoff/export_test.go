package handoff

// HandedOff returns how many connections this View's server gave up to a
// newer View.
func (v *View) HandedOff() int64 { return v.handoffs.Load() }
