package precopy

import "encoding/binary"

// contentIndex maps content sums to a page the target holds with that
// content. It is keyed by the sum's first 8 bytes (uniform for both hashes)
// and keeps the whole sum, so two sums that share a key are a miss for the
// later one, never a wrong match; a uint64 key makes a lookup about three
// times cheaper than a 32-byte one.
type contentIndex struct {
	m map[uint64]indexEntry
}

type indexEntry struct {
	sum Sum
	h   holder
}

func newContentIndex(hint int) contentIndex {
	return contentIndex{m: make(map[uint64]indexEntry, hint)}
}

func key(s *Sum) uint64 { return binary.LittleEndian.Uint64(s[:8]) }

// get returns the holder of content s.
func (x contentIndex) get(s Sum) (holder, bool) {
	e, ok := x.m[key(&s)]
	if !ok || e.sum != s {
		return holder{}, false
	}
	return e.h, true
}

// put records h as the holder of s, replacing the holder of s or of a sum
// sharing its key.
func (x contentIndex) put(s Sum, h holder) { x.m[key(&s)] = indexEntry{sum: s, h: h} }

// add records h as the holder of s unless the key is taken.
func (x contentIndex) add(s Sum, h holder) {
	k := key(&s)
	if _, ok := x.m[k]; !ok {
		x.m[k] = indexEntry{sum: s, h: h}
	}
}

// forget removes s from the index if h is its holder.
func (x contentIndex) forget(s Sum, h holder) {
	k := key(&s)
	if e, ok := x.m[k]; ok && e.sum == s && e.h == h {
		delete(x.m, k)
	}
}
