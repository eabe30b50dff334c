package pageserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/wire"
)

// errPartialPage is returned by FileSource.Slice for a range that includes the zero-padded tail page.
var errPartialPage = errors.New("range includes the partial last page")

// FileSource serves a memory file (a VM snapshot's memory file, typically) as region 0, named after the
// file's base name. The file is mapped read-only and shared; it must not be truncated while mapped
// (reading a page beyond the new end of file would fault with SIGBUS) and is assumed not to change
// (FileSource is Immutable, so digests are cached).
//
// A file whose size is not a multiple of the page size ends in a partial page, read as zero-padded.
// FileSource implements Source, Slicer (except for the partial page, which only ReadPages serves) and
// Immutable.
type FileSource struct {
	region   wire.Region
	mem      []byte // the mapping, len(mem) == file size
	whole    uint64 // pages entirely inside the file
	pageSize int
	closed   atomic.Bool
}

var (
	_ Source    = (*FileSource)(nil)
	_ Slicer    = (*FileSource)(nil)
	_ Immutable = (*FileSource)(nil)
)

// OpenFile maps the file at path read-only and returns a source serving it with pages of pageSize
// bytes. An empty file is an error. Close unmaps it.
func OpenFile(path string, pageSize int) (*FileSource, error) {
	if err := checkPageSize(pageSize); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open memory file: %w", err)
	}
	defer f.Close() // the mapping outlives the descriptor
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open memory file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open memory file %s: not a regular file (%s)", path, fi.Mode().Type())
	}
	size := fi.Size()
	if size == 0 {
		return nil, fmt.Errorf("open memory file %s: file is empty", path)
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("open memory file %s: size %d does not fit in memory", path, size)
	}
	name := filepath.Base(path)
	if len(name) > wire.MaxNameLen {
		name = name[:wire.MaxNameLen]
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap memory file %s (%d bytes): %w", path, size, err)
	}
	ps := int64(pageSize)
	return &FileSource{
		region:   wire.Region{ID: 0, Name: name, Pages: uint64((size + ps - 1) / ps)},
		mem:      mem,
		whole:    uint64(size / ps),
		pageSize: pageSize,
	}, nil
}

func (s *FileSource) PageSize() int { return s.pageSize }

func (s *FileSource) Regions() []wire.Region { return []wire.Region{s.region} }

// Immutable reports true: a memory file is a snapshot.
func (s *FileSource) Immutable() bool { return true }

func (s *FileSource) check(region uint32, page, count uint64) error {
	if s.closed.Load() {
		return fmt.Errorf("memory file %s: %w", s.region.Name, os.ErrClosed)
	}
	if region != s.region.ID {
		return fmt.Errorf("region %d: %w", region, ErrUnknownRegion)
	}
	if err := checkRange(s.region.Pages, page, count); err != nil {
		return fmt.Errorf("region %d: %w", region, err)
	}
	return nil
}

// ReadPages copies the pages into dst; the part of the last page beyond the end of the file reads as
// zeros.
func (s *FileSource) ReadPages(region uint32, page uint64, dst []byte) error {
	if len(dst)%s.pageSize != 0 {
		return fmt.Errorf("read %d bytes: not a whole number of %d-byte pages: %w", len(dst), s.pageSize, ErrOutOfRange)
	}
	if err := s.check(region, page, uint64(len(dst)/s.pageSize)); err != nil {
		return err
	}
	off := int(page) * s.pageSize
	n := copy(dst, s.mem[off:]) // stops at the end of the file
	clear(dst[n:])
	return nil
}

// Slice returns pages [page, page+count) of the mapping. It fails for a range that includes a
// partial last page; ReadPages serves that one.
func (s *FileSource) Slice(region uint32, page uint64, count int) ([]byte, error) {
	if count < 0 {
		return nil, fmt.Errorf("slice %d pages: %w", count, ErrOutOfRange)
	}
	if err := s.check(region, page, uint64(count)); err != nil {
		return nil, err
	}
	if page+uint64(count) > s.whole {
		return nil, fmt.Errorf("region %d pages %d+%d: %w", region, page, count, errPartialPage)
	}
	off, n := int(page)*s.pageSize, count*s.pageSize
	return s.mem[off : off+n : off+n], nil
}

// Close unmaps the file. Slices returned by Slice become invalid (touching them faults): close the
// Server that uses the source first.
func (s *FileSource) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := unix.Munmap(s.mem); err != nil {
		return fmt.Errorf("munmap memory file %s: %w", s.region.Name, err)
	}
	return nil
}
