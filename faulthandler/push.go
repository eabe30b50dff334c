package faulthandler

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/pagewarp/pagewarp/wire"
)

// Pushed pages and probes.
//
// A page server with a predictor follows a demand reply with a Push notice
// and the pages it announces (docs/protocol.md). The target marks announced
// pages in flight (statePushed), so a fault on one waits for it instead of
// asking again, and installs each pushed run as it arrives with one
// UFFDIO_COPY, which also wakes any thread that faulted on it.
//
// An installed page no longer faults, so the target cannot see whether a
// pushed page was used. To tell the server's predictor how well it does, the
// target holds back a sample of the pushed pages, the probes (one in
// Options.ProbeEvery, chosen by a salted hash of the page number): a probe's
// data waits in memory (stateStaged) until the workload touches it, which
// faults and is served at once from that memory without a request (a local
// fault, a few microseconds), and is reported used; a probe untouched for
// Options.ProbeExpiry demand faults is installed and reported unused. The
// server feeds both to its predictor and its push window (wire.Feedback).

// maxStaged bounds the probes held at once; past it pushed pages are
// installed directly.
const maxStaged = 4096

// maxReport is the most pages one Feedback frame carries per list.
const maxReport = 256

type stagedPage struct {
	data []byte // nil for a zero page
	at   uint64 // the demand-fault clock when staged
}

type staging struct {
	every  uint64
	salt   uint64
	expiry uint64
	n      atomic.Int64 // len(pages), for markResident's completion check

	mu     sync.Mutex
	pages  map[uint64]*stagedPage
	fifo   []uint64 // staged pages in order of staging (may hold pages since taken)
	free   [][]byte
	used   []uint64 // reports not yet sent
	unused []uint64
}

func newStaging(every, expiry int) *staging {
	var salt [8]byte
	rand.Read(salt[:])
	return &staging{
		every:  uint64(every),
		salt:   binary.LittleEndian.Uint64(salt[:]),
		expiry: uint64(expiry),
		pages:  make(map[uint64]*stagedPage),
	}
}

// probe reports whether page is in the sample.
func (s *staging) probe(page uint64) bool {
	if s.every == 1 {
		return true
	}
	x := page ^ s.salt
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return x%s.every == 0
}

// announce marks the pages of a Push notice in flight.
func (h *Handler) announce(m *wire.Push) error {
	for _, p := range m.Pages {
		if p >= h.npages {
			return fmt.Errorf("server announced a push of page %d, outside the region of %d pages", p, h.npages)
		}
	}
	h.stats.pushNotices.Add(1)
	for _, p := range m.Pages {
		h.state[p].CompareAndSwap(stateMissing, statePushed)
	}
	return nil
}

// installPushed installs a verified pushed run, holding back its probes.
// data is nil for a zero run.
func (h *Handler) installPushed(page uint64, count int, data []byte, dontWake bool) error {
	h.stats.pushedReceived.Add(uint64(count))
	if st := h.stage; st != nil {
		st.mu.Lock()
		for i := range count {
			p := page + uint64(i)
			if len(st.pages) >= maxStaged || !st.probe(p) || !h.state[p].CompareAndSwap(statePushed, stateStaged) {
				continue
			}
			sp := &stagedPage{at: h.stats.demandRequests.Load()}
			if data != nil {
				var buf []byte
				if n := len(st.free); n > 0 {
					buf, st.free = st.free[n-1], st.free[:n-1]
				} else {
					buf = make([]byte, h.pageSize)
				}
				copy(buf, data[i*h.pageSize:(i+1)*h.pageSize])
				sp.data = buf
			}
			st.pages[p] = sp
			st.n.Add(1)
			st.fifo = append(st.fifo, p)
			h.stats.probesStaged.Add(1)
		}
		st.mu.Unlock()
	}
	if data == nil {
		return h.installZeroMode(page, count, kindPushed, dontWake)
	}
	return h.installDataMode(page, count, data, kindPushed, dontWake)
}

// takeStaged installs a staged probe page that a thread faulted on and
// records it used. It reports whether page was staged.
func (h *Handler) takeStaged(page uint64) (bool, error) {
	st := h.stage
	if st == nil || h.state[page].Load() != stateStaged {
		return false, nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	sp := st.pages[page]
	if sp == nil || !h.state[page].CompareAndSwap(stateStaged, statePushed) {
		return false, nil
	}
	delete(st.pages, page)
	st.n.Add(-1)
	st.used = append(st.used, page)
	h.stats.probesUsed.Add(1)
	return true, h.installStaged(page, sp)
}

// installStaged installs one page taken out of staging (state statePushed);
// st.mu is held.
func (h *Handler) installStaged(page uint64, sp *stagedPage) error {
	if sp.data == nil {
		return h.installZero(page, 1, kindPushed)
	}
	err := h.installData(page, 1, sp.data, kindPushed)
	h.stage.free = append(h.stage.free, sp.data)
	return err
}

// expireStaged installs the probes staged ProbeExpiry demand faults ago or
// earlier and records them unused; all of them when all is set (every
// other page is resident). The fault loop calls it after each batch.
func (h *Handler) expireStaged(all bool) error {
	st := h.stage
	if st == nil {
		return nil
	}
	clock := h.stats.demandRequests.Load()
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, p := range st.fifo {
		sp := st.pages[p]
		if sp == nil {
			n++ // taken already
			continue
		}
		if !all && clock-sp.at < st.expiry {
			break
		}
		n++
		if !h.state[p].CompareAndSwap(stateStaged, statePushed) {
			continue
		}
		delete(st.pages, p)
		st.n.Add(-1)
		if !all {
			st.unused = append(st.unused, p)
			h.stats.probesUnused.Add(1)
		}
		if err := h.installStaged(p, sp); err != nil {
			st.fifo = st.fifo[n:]
			return err
		}
	}
	st.fifo = st.fifo[n:]
	if len(st.fifo) == 0 {
		st.fifo = st.fifo[:0:0] // let the backing array go
	}
	return nil
}

// stagedCount returns the number of staged probes.
func (h *Handler) stagedCount() int {
	if h.stage == nil {
		return 0
	}
	h.stage.mu.Lock()
	defer h.stage.mu.Unlock()
	return len(h.stage.pages)
}

// takeReports returns the pending Feedback lists (at most maxReport pages
// each) and whether more remain.
func (h *Handler) takeReports() (used, unused []uint64, more bool) {
	st := h.stage
	if st == nil {
		return nil, nil, false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	nu, nn := min(len(st.used), maxReport), min(len(st.unused), maxReport)
	used = append([]uint64(nil), st.used[:nu]...)
	unused = append([]uint64(nil), st.unused[:nn]...)
	st.used = append(st.used[:0], st.used[nu:]...)
	st.unused = append(st.unused[:0], st.unused[nn:]...)
	return used, unused, len(st.used) > 0 || len(st.unused) > 0
}

// reportsPending returns the number of probe reports not yet sent.
func (h *Handler) reportsPending() int {
	st := h.stage
	if st == nil {
		return 0
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.used) + len(st.unused)
}
