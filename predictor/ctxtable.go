package predictor

// ctxTable holds PPM contexts: a hash of the model, the order and the last symbols, mapped to up
// to ctxSlots successor symbols with counts. It is a fixed-size 4-way set-associative table, so
// memory is bounded by construction: inserting into a full set evicts the least recently used
// context of that set. Counts age: when one successor's count reaches ctxMaxCount, every count of
// that context halves, so a successor that stops following the context is overtaken after about
// ctxMaxCount/2 occurrences of its replacement.
type ctxTable struct {
	e     []ctxEntry
	mask  uint64 // sets-1
	clock uint32
	used  int // occupied entries
}

const (
	ctxWays     = 4
	ctxSlots    = 4
	ctxMaxCount = 32
)

type ctxEntry struct {
	key   uint64 // 0: empty
	stamp uint32 // clock of the last update, for LRU
	total uint32 // sum of cnt
	sym   [ctxSlots]int64
	cnt   [ctxSlots]uint16
}

func newCtxTable(maxContexts int) ctxTable {
	sets := 1
	for sets*2*ctxWays <= maxContexts {
		sets *= 2
	}
	return ctxTable{e: make([]ctxEntry, sets*ctxWays), mask: uint64(sets - 1)}
}

func (t *ctxTable) set(key uint64) []ctxEntry {
	s := int((key^key>>32)&t.mask) * ctxWays
	return t.e[s : s+ctxWays]
}

// find returns the context with key, or nil.
func (t *ctxTable) find(key uint64) *ctxEntry {
	set := t.set(key)
	for i := range set {
		if set[i].key == key {
			return &set[i]
		}
	}
	return nil
}

// update counts sym as a successor of the context key, inserting the context if needed.
func (t *ctxTable) update(key uint64, sym int64) {
	t.clock++
	set := t.set(key)
	var e *ctxEntry
	for i := range set {
		if set[i].key == key {
			e = &set[i]
			break
		}
	}
	if e == nil {
		victim := 0 // the first empty way, else the least recently updated one
		for i := range set {
			if set[i].key == 0 {
				victim = i
				break
			}
			if t.clock-set[i].stamp > t.clock-set[victim].stamp {
				victim = i
			}
		}
		e = &set[victim]
		if e.key == 0 {
			t.used++
		}
		*e = ctxEntry{key: key}
	}
	e.stamp = t.clock
	low := 0
	for i := range e.sym {
		if e.cnt[i] != 0 && e.sym[i] == sym {
			e.cnt[i]++
			e.total++
			if e.cnt[i] >= ctxMaxCount {
				e.total = 0
				for j := range e.cnt {
					e.cnt[j] /= 2
					e.total += uint32(e.cnt[j])
				}
			}
			return
		}
		if e.cnt[i] < e.cnt[low] {
			low = i
		}
	}
	// New successor: take a free slot or replace the weakest one.
	e.total -= uint32(e.cnt[low])
	e.sym[low], e.cnt[low] = sym, 1
	e.total++
}

// best returns the most frequent successor and its probability estimated as PPM method C does:
// count / (total + distinct successors), the distinct term being the escape mass.
func (e *ctxEntry) best() (sym int64, prob float64) {
	top, distinct := -1, 0
	for i := range e.cnt {
		if e.cnt[i] == 0 {
			continue
		}
		distinct++
		if top < 0 || e.cnt[i] > e.cnt[top] {
			top = i
		}
	}
	if top < 0 {
		return 0, 0
	}
	return e.sym[top], float64(e.cnt[top]) / float64(e.total+uint32(distinct))
}

// ctxKey hashes model, order and the newest order symbols of hist (hist[0] newest).
func ctxKey(model, order int, hist *[maxOrder]int64) uint64 {
	h := uint64(model<<8|order+1) * 0x9e3779b97f4a7c15
	for i := 0; i < order; i++ {
		h ^= uint64(hist[i])
		h *= 0xbf58476d1ce4e5b9
		h ^= h >> 31
	}
	if h == 0 {
		h = 1
	}
	return h
}
