package pageserver

import (
	"errors"
	"fmt"

	"github.com/pagewarp/pagewarp/wire"
)

// Errors returned by sources, wrapped with context; test with errors.Is.
var (
	// ErrUnknownRegion means the region id is not one of the source's regions.
	ErrUnknownRegion = errors.New("unknown region")
	// ErrOutOfRange means the pages asked for are not inside the region, or a buffer is not a whole
	// number of pages.
	ErrOutOfRange = errors.New("out of range")
)

// Source is the memory a Server serves, as regions of pages.
//
// A Source must be safe for concurrent use: every connection's send loop reads it. PageSize and Regions
// must not change once the Source is handed to New.
type Source interface {
	// PageSize returns the bytes per page: a power of two in [wire.MinPageSize, wire.MaxPageSize].
	PageSize() int
	// Regions returns the regions, at most wire.MaxRegions.
	Regions() []wire.Region
	// ReadPages copies pages [page, page+len(dst)/PageSize()) of region into dst. len(dst) must be a
	// multiple of PageSize().
	ReadPages(region uint32, page uint64, dst []byte) error
}

// Slicer is implemented by sources backed by memory (an in-process region, an mmap'd file); the
// faulthandler's in-process mode and the server use it to avoid a copy. The slice aliases the source;
// the caller must not modify it.
type Slicer interface {
	Slice(region uint32, page uint64, count int) ([]byte, error)
}

// Immutable is implemented by sources whose contents never change while they are served (a snapshot's
// memory file). The server caches their region digests; for other sources it recomputes them.
type Immutable interface {
	Immutable() bool
}

// checkRange checks that [page, page+count) lies inside a region of pages pages, without overflow.
func checkRange(pages, page, count uint64) error {
	if page > pages || count > pages-page {
		return fmt.Errorf("pages %d+%d of %d: %w", page, count, pages, ErrOutOfRange)
	}
	return nil
}

func checkPageSize(pageSize int) error {
	if !wire.ValidPageSize(pageSize) {
		return fmt.Errorf("page size %d is not a power of two in [%d, %d]", pageSize, wire.MinPageSize, wire.MaxPageSize)
	}
	return nil
}

// RegionSource serves in-process memory regions (NewRegionSource: one, as region 0). It implements
// Source and Slicer.
//
// The memory may change while it is served (a live region); each page is hashed and sent in one go, so
// a page written concurrently reaches the target either whole and verified or with a hash mismatch
// that the target rejects, never silently torn.
type RegionSource struct {
	regions  []wire.Region
	mems     map[uint32][]byte
	pageSize int
}

var (
	_ Source = (*RegionSource)(nil)
	_ Slicer = (*RegionSource)(nil)
)

// MemRegion is one in-process region for NewRegionsSource.
type MemRegion struct {
	ID   uint32
	Name string
	Mem  []byte
}

// NewRegionSource returns a source serving mem as region 0 named name. len(mem) must be a multiple of
// pageSize, and pageSize a valid protocol page size. mem is not copied.
func NewRegionSource(name string, mem []byte, pageSize int) (*RegionSource, error) {
	return NewRegionsSource([]MemRegion{{ID: 0, Name: name, Mem: mem}}, pageSize)
}

// NewRegionsSource returns a source serving several in-process regions (a gang migration), each under
// its own id. Each Mem must be a non-empty multiple of pageSize; ids must differ. Nothing is copied.
func NewRegionsSource(regions []MemRegion, pageSize int) (*RegionSource, error) {
	if err := checkPageSize(pageSize); err != nil {
		return nil, err
	}
	if len(regions) == 0 || len(regions) > wire.MaxRegions {
		return nil, fmt.Errorf("%d regions: want 1 to %d", len(regions), wire.MaxRegions)
	}
	s := &RegionSource{mems: make(map[uint32][]byte, len(regions)), pageSize: pageSize}
	for _, r := range regions {
		if len(r.Mem)%pageSize != 0 || len(r.Mem) == 0 {
			return nil, fmt.Errorf("region %q: length %d is not a positive multiple of the page size %d", r.Name, len(r.Mem), pageSize)
		}
		if len(r.Name) > wire.MaxNameLen {
			return nil, fmt.Errorf("region name is %d bytes, limit %d", len(r.Name), wire.MaxNameLen)
		}
		if _, dup := s.mems[r.ID]; dup {
			return nil, fmt.Errorf("region id %d listed twice", r.ID)
		}
		s.mems[r.ID] = r.Mem
		s.regions = append(s.regions, wire.Region{ID: r.ID, Name: r.Name, Pages: uint64(len(r.Mem) / pageSize)})
	}
	return s, nil
}

func (s *RegionSource) PageSize() int { return s.pageSize }

func (s *RegionSource) Regions() []wire.Region { return s.regions }

// span returns the memory of region and the byte range of count pages from page.
func (s *RegionSource) span(region uint32, page uint64, count uint64) (mem []byte, off, n int, err error) {
	mem, ok := s.mems[region]
	if !ok {
		return nil, 0, 0, fmt.Errorf("region %d: %w", region, ErrUnknownRegion)
	}
	if err := checkRange(uint64(len(mem)/s.pageSize), page, count); err != nil {
		return nil, 0, 0, fmt.Errorf("region %d: %w", region, err)
	}
	return mem, int(page) * s.pageSize, int(count) * s.pageSize, nil
}

func (s *RegionSource) ReadPages(region uint32, page uint64, dst []byte) error {
	if len(dst)%s.pageSize != 0 {
		return fmt.Errorf("read %d bytes: not a whole number of %d-byte pages: %w", len(dst), s.pageSize, ErrOutOfRange)
	}
	mem, off, n, err := s.span(region, page, uint64(len(dst)/s.pageSize))
	if err != nil {
		return err
	}
	copy(dst, mem[off:off+n])
	return nil
}

// Slice returns pages [page, page+count) of region, aliasing the region's memory.
func (s *RegionSource) Slice(region uint32, page uint64, count int) ([]byte, error) {
	if count < 0 {
		return nil, fmt.Errorf("slice %d pages: %w", count, ErrOutOfRange)
	}
	mem, off, n, err := s.span(region, page, uint64(count))
	if err != nil {
		return nil, err
	}
	return mem[off : off+n : off+n], nil
}
