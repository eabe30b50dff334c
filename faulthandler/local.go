package faulthandler

import (
	"context"
	"fmt"

	"github.com/pagewarp/pagewarp/pageserver"
)

// NewLocal returns a Handler that serves faults from src in this process,
// without a network: the fault loop installs each faulted page straight
// from the source (no copy when src is a pageserver.Slicer). It is the
// in-process baseline of the fault benchmark and the way to migrate between
// two regions of one process.
func NewLocal(src pageserver.Source, region uint32, opts Options) (*Handler, error) {
	var pages uint64
	found := false
	for _, r := range src.Regions() {
		if r.ID == region {
			pages, found = r.Pages, true
		}
	}
	if !found {
		return nil, fmt.Errorf("source has no region %d", region)
	}
	h, err := newHandler(src.PageSize(), pages, opts)
	if err != nil {
		return nil, err
	}
	l := &local{h: h, src: src, region: region}
	l.slicer, _ = src.(pageserver.Slicer)
	l.buf = make([]byte, h.opts.PullChunk*h.pageSize)
	l.faultBuf = make([]byte, h.pageSize)
	h.fetch = l
	return h, nil
}

type local struct {
	h        *Handler
	src      pageserver.Source
	slicer   pageserver.Slicer
	region   uint32
	buf      []byte // pull loop's scratch
	faultBuf []byte // fault loop's scratch
}

func (l *local) start(context.Context) {}
func (l *local) flush() error          { return nil }
func (l *local) maintain() error       { return nil }
func (l *local) finish(context.Context) error {
	return nil
}
func (l *local) close()          {}
func (l *local) release()        {}
func (l *local) pollFD() int     { return -1 }
func (l *local) readable() error { return nil }
func (l *local) awaiting() bool  { return false }

// read returns pages [page, page+count) of the source, aliasing the source
// when it is a Slicer, else copied into scratch.
func (l *local) read(page uint64, count int, scratch []byte) ([]byte, error) {
	if l.slicer != nil {
		if b, err := l.slicer.Slice(l.region, page, count); err == nil {
			return b, nil
		}
	}
	b := scratch[:count*l.h.pageSize]
	if err := l.src.ReadPages(l.region, page, b); err != nil {
		return nil, err
	}
	return b, nil
}

func (l *local) demand(page uint64) error {
	b, err := l.read(page, 1, l.faultBuf)
	if err != nil {
		return fmt.Errorf("read page %d from source: %w", page, err)
	}
	if isZero(b) {
		return l.h.installZero(page, 1, kindZero)
	}
	return l.h.installData(page, 1, b, kindDemand)
}

// pull installs every page nobody faulted on, in chunks, restarting near
// the latest fault.
func (l *local) pull(ctx context.Context) error {
	h := l.h
	var cursor, seenFault uint64
	for ctx.Err() == nil {
		if f := h.latestFault.Load(); f != seenFault {
			seenFault, cursor = f, f
		}
		first, count, ok := h.nextMissingRun(cursor, h.opts.PullChunk)
		if !ok {
			return nil
		}
		cursor = first + uint64(count)
		h.stats.pullRequests.Add(1)
		b, err := l.read(first, count, l.buf)
		if err != nil {
			return fmt.Errorf("read pages %d+%d from source: %w", first, count, err)
		}
		if err := installMixed(h, first, count, b, kindBackground); err != nil {
			return err
		}
	}
	return nil
}

// installMixed installs data pages, using the zero page for runs of zeros.
func installMixed(h *Handler, first uint64, count int, b []byte, kind pageKind) error {
	ps := h.pageSize
	i := 0
	for i < count {
		zero := isZero(b[i*ps : (i+1)*ps])
		j := i + 1
		for j < count && isZero(b[j*ps:(j+1)*ps]) == zero {
			j++
		}
		var err error
		if zero {
			err = h.installZero(first+uint64(i), j-i, kindZero)
		} else {
			err = h.installData(first+uint64(i), j-i, b[i*ps:j*ps], kind)
		}
		if err != nil {
			return err
		}
		i = j
	}
	return nil
}
