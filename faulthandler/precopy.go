package faulthandler

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/wire"
)

// Pre-copy installs pages into the region before the workload runs on the
// target (package precopy drives it). These methods are for the time between
// Dial/NewRemote and Start: the fault loop is not running and nothing touches
// Memory(), so a page's state can only change through them. Different
// goroutines may call them at once for different pages (one per pre-copy
// stream); two calls for the same page at once are the caller's bug.
//
// A page installed by pre-copy is resident: the background pull never asks
// for it and a fault never happens on it, unless Drop makes it missing again.

// ErrStarted is returned by the pre-copy methods after Start.
var ErrStarted = errors.New("faulthandler: pre-copy after Start")

// Session returns the 16-byte session token this handler sent in its Hello
// (zero for a handler made by NewLocal). Pre-copy streams carry the same
// token so that the server ties them to this migration.
func (h *Handler) Session() [16]byte {
	if r, ok := h.fetch.(*remote); ok {
		return r.session
	}
	return [16]byte{}
}

// RegionID returns the id of the migrated region.
func (h *Handler) RegionID() uint32 {
	if r, ok := h.fetch.(*remote); ok {
		return r.region.ID
	}
	if l, ok := h.fetch.(*local); ok {
		return l.region
	}
	return 0
}

// IsResident reports whether page holds data (installed and not dropped).
func (h *Handler) IsResident(page uint64) bool {
	return page < h.npages && h.state[page].Load() == stateResident
}

func (h *Handler) precopyCheck(page uint64, n int) error {
	if h.running.Load() {
		return ErrStarted
	}
	if n <= 0 || page >= h.npages || uint64(n) > h.npages-page {
		return &wire.Error{Code: wire.CodeOutOfRange, Message: fmt.Sprintf("pages %d+%d outside the region of %d pages", page, n, h.npages)}
	}
	return nil
}

// PrecopyData installs len(data)/PageSize() pages starting at page, already
// verified: missing pages with UFFDIO_COPY, resident ones overwritten in
// place. Its pages and bytes count as pre-copy data received (Stats:
// PrecopyPages, PrecopyBytes).
func (h *Handler) PrecopyData(page uint64, data []byte) error {
	return h.precopyCopy(page, data, kindPrecopy)
}

// PrecopyRef is PrecopyData for pages whose content did not travel: src is
// the source of references (a page of this migration the target holds, or
// of its base snapshot), already checked against the references' hashes.
// Its pages count as duplicates (Stats.DuplicatePages), no bytes as
// received.
func (h *Handler) PrecopyRef(page uint64, src []byte) error {
	return h.precopyCopy(page, src, kindDuplicate)
}

// precopyCopy installs data from page, counting its pages as kind.
func (h *Handler) precopyCopy(page uint64, data []byte, kind pageKind) error {
	if len(data)%h.pageSize != 0 {
		return fmt.Errorf("pre-copy data of %d bytes is not a whole number of %d-byte pages", len(data), h.pageSize)
	}
	n := len(data) / h.pageSize
	if err := h.precopyCheck(page, n); err != nil {
		return err
	}
	if kind == kindPrecopy {
		h.stats.bytesReceived[kindPrecopy].Add(uint64(len(data)))
	}
	return h.precopyRuns(page, n, kind,
		func(p uint64, k int) (int, error) {
			off := int(p-page) * h.pageSize
			return h.uffd.Copy(h.addr(p), data[off:off+k*h.pageSize], 0)
		},
		func(p uint64, k int) {
			off := int(p-page) * h.pageSize
			copy(h.mem[int(p)*h.pageSize:int(p+uint64(k))*h.pageSize], data[off:off+k*h.pageSize])
		})
}

// PrecopyZero makes n pages from page all zero: missing pages with
// UFFDIO_ZEROPAGE, resident ones cleared in place.
func (h *Handler) PrecopyZero(page uint64, n int) error {
	if err := h.precopyCheck(page, n); err != nil {
		return err
	}
	return h.precopyRuns(page, n, kindPrecopy,
		func(p uint64, k int) (int, error) {
			return h.uffd.Zeropage(h.addr(p), uint64(k*h.pageSize), 0)
		},
		func(p uint64, k int) {
			clear(h.mem[int(p)*h.pageSize : int(p+uint64(k))*h.pageSize])
		})
}

// PrecopyPage returns the bytes of a resident page, to copy a reference
// from; ok is false if the page is not resident (reading it would block).
// The slice aliases the region.
func (h *Handler) PrecopyPage(page uint64) (b []byte, ok bool) {
	if !h.IsResident(page) {
		return nil, false
	}
	off := int(page) * h.pageSize
	return h.mem[off : off+h.pageSize], true
}

// PrecopyPages returns the bytes of n consecutive resident pages from
// page, or ok false if one of them is not resident.
func (h *Handler) PrecopyPages(page uint64, n int) (b []byte, ok bool) {
	if n <= 0 || page >= h.npages || uint64(n) > h.npages-page {
		return nil, false
	}
	for p := page; p < page+uint64(n); p++ {
		if h.state[p].Load() != stateResident {
			return nil, false
		}
	}
	return h.mem[int(page)*h.pageSize : int(page+uint64(n))*h.pageSize], true
}

// Drop makes resident pages missing again (MADV_DONTNEED on the registered
// region: the next touch faults and the page is fetched from the source).
// Pre-copy drops a page whose new content failed verification, and the
// switch to post-copy drops the pages the workload wrote after the last
// round. Pages already missing are left alone.
func (h *Handler) Drop(pages []uint64) error {
	if h.running.Load() {
		return ErrStarted
	}
	for i := 0; i < len(pages); {
		p := pages[i]
		if p >= h.npages {
			return &wire.Error{Code: wire.CodeOutOfRange, Message: fmt.Sprintf("drop page %d outside the region of %d pages", p, h.npages)}
		}
		// Extend over following pages that are consecutive.
		j := i + 1
		for j < len(pages) && pages[j] == pages[j-1]+1 && pages[j] < h.npages {
			j++
		}
		n := uint64(j - i)
		if err := unix.Madvise(h.mem[int(p)*h.pageSize:int(p+n)*h.pageSize], unix.MADV_DONTNEED); err != nil {
			return fmt.Errorf("drop pages %d+%d: %w", p, n, err)
		}
		var dropped uint64
		for q := p; q < p+n; q++ {
			if h.state[q].CompareAndSwap(stateResident, stateMissing) {
				dropped++
			}
		}
		if dropped > 0 {
			h.resident.Add(^(dropped - 1))
			h.stats.precopyDropped.Add(dropped)
		}
		i = j
	}
	return nil
}

// precopyRuns walks [page, page+n): runs of missing pages go to install
// (which returns the bytes it installed, like UFFDIO_COPY), runs of
// resident pages to inPlace. The pages install installs count as kind.
func (h *Handler) precopyRuns(page uint64, n int, kind pageKind, install func(p uint64, k int) (int, error), inPlace func(p uint64, k int)) error {
	end := page + uint64(n)
	for p := page; p < end; {
		resident := h.state[p].Load() == stateResident
		q := p + 1
		for q < end && (h.state[q].Load() == stateResident) == resident {
			q++
		}
		if resident {
			inPlace(p, int(q-p))
			h.stats.precopyInPlace.Add(q - p)
			p = q
			continue
		}
		for p < q {
			done, err := install(p, int(q-p))
			installed := uint64(done / h.pageSize)
			h.markResident(p, installed, kind)
			p += installed
			if err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("pre-copy install page %d: %w", p, err)
			}
			if err != nil {
				// Present in the page table but not marked resident: cannot
				// happen before Start (nothing else installs). Fail loudly
				// rather than guess at its content.
				return fmt.Errorf("pre-copy install page %d: present but not resident: %w", p, err)
			}
		}
	}
	return nil
}
