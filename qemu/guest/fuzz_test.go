package guest

import (
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzCheck feeds the checkers memory dumps as QEMU's pmemsave would return them from a guest
// in any state: they must return the passes or an error (ErrCorrupt for memory that breaks an
// invariant), never panic, and never accept a dump whose header is not the pattern's.
func FuzzCheck(f *testing.F) {
	c := Config{Pages: 16, Stride: 5, Hot: 4}
	for _, p := range Patterns {
		h, r, n := simulateTouches(p, c, 37)
		f.Add(uint32(p), h, r, n)
	}
	f.Add(uint32(HotSet), []byte{}, []byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, pattern uint32, header, region []byte, touches uint32) {
		p := Pattern(pattern%uint32(len(Patterns)+1) + 1) // an unknown one too
		passes, err := Check(p, c, header, region)
		terr := CheckTouches(p, c, header, region, touches)
		if len(header) >= HeaderSize && binary.LittleEndian.Uint32(header) == Magic &&
			Pattern(binary.LittleEndian.Uint32(header[4:])) != p {
			if err == nil || terr == nil {
				t.Fatalf("a header of pattern %d accepted for %v", binary.LittleEndian.Uint32(header[4:]), p)
			}
		}
		if err == nil && len(header) >= HeaderSize && passes != binary.LittleEndian.Uint32(header[8:]) {
			t.Fatalf("passes %d, header says %d", passes, binary.LittleEndian.Uint32(header[8:]))
		}
		if err != nil && len(region) == int(c.Pages)*PageSize && len(header) >= HeaderSize &&
			binary.LittleEndian.Uint32(header) == Magic && !errors.Is(err, ErrCorrupt) {
			if _, known := patternNames[p]; known && Pattern(binary.LittleEndian.Uint32(header[4:])) == p {
				t.Fatalf("a well-sized dump rejected without ErrCorrupt: %v", err)
			}
		}
	})
}
