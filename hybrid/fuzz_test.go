package hybrid

import (
	"encoding/binary"
	"math"
	"reflect"
	"testing"
	"time"
)

// FuzzDecide runs every policy on arbitrary histories, consistent or not (fake dirty above
// dirty, zero durations, Remaining above the region), and checks the Decision invariants:
// no panic, a reason, finite Numbers that the reason's figures come from, determinism.
func FuzzDecide(f *testing.F) {
	f.Add(uint32(3000), uint8(10), 0.0, uint16(16384), []byte{})
	f.Add(uint32(5000), uint8(3), 1e9, uint16(16384), roundBytes(mkRound(0, 16384, 0), mkRound(1, 4096, 0), mkRound(2, 2048, 0)))
	f.Add(uint32(0), uint8(0), 0.0, uint16(0), roundBytes(Round{}, Round{Index: 1, Dirty: 5, FakeDirty: 9}))
	f.Add(uint32(1), uint8(1), math.Inf(1), uint16(8), roundBytes(mkRound(0, 8, 0), mkRound(1, 8, 0)))
	f.Add(uint32(1), uint8(30), 0.0, uint16(0), roundBytes(Round{Bytes: 100, Duration: 10 * time.Microsecond}, Round{Index: 1, Remaining: 50, Bytes: 100, Duration: 10 * time.Microsecond}))
	f.Add(uint32(20000), uint8(30), 1.25e8, uint16(32768), []byte{0x00, 0x80, 100})
	f.Fuzz(func(t *testing.T, budgetUs uint32, maxRounds uint8, bw float64, pages uint16, data []byte) {
		env := Env{
			PageSize: testPageSize, TotalPages: uint64(pages), DowntimeBudget: time.Duration(budgetUs) * time.Microsecond,
			MaxRounds: int(maxRounds), Bandwidth: bw,
		}
		var rs []Round
		for i := 0; len(data) >= roundSize && i < 64; i, data = i+1, data[roundSize:] {
			rs = append(rs, decodeRound(i, data))
		}
		if len(data) >= 3 {
			// The tail, shorter than a round: a probe before round 0.
			env.ProbeDirty = uint64(binary.LittleEndian.Uint16(data))
			env.ProbeWindow = time.Duration(data[2]) * time.Millisecond
		}
		for _, name := range Names() {
			p, _ := New(name)
			d := p.Decide(env, rs)
			checkDecision(t, name, d)
			if d2 := p.Decide(env, rs); !reflect.DeepEqual(d, d2) {
				t.Fatalf("%s: not deterministic: %+v then %+v", name, d, d2)
			}
		}
	})
}

// roundSize is the bytes a fuzzed round takes: dirty, fake, remaining (uint16 each),
// bytes (uint32), duration and interval (uint16 each, in 10 µs).
const roundSize = 14

func decodeRound(i int, b []byte) Round {
	le := binary.LittleEndian
	return Round{
		Index: i, Dirty: uint64(le.Uint16(b[0:])), FakeDirty: uint64(le.Uint16(b[2:])), Remaining: uint64(le.Uint16(b[4:])),
		Bytes: uint64(le.Uint32(b[6:])), Duration: time.Duration(le.Uint16(b[10:])) * 10 * time.Microsecond,
		Interval: time.Duration(le.Uint16(b[12:])) * 10 * time.Microsecond,
	}
}

func roundBytes(rs ...Round) []byte {
	var out []byte
	for _, r := range rs {
		b := make([]byte, roundSize)
		le := binary.LittleEndian
		le.PutUint16(b[0:], uint16(r.Dirty))
		le.PutUint16(b[2:], uint16(r.FakeDirty))
		le.PutUint16(b[4:], uint16(r.Remaining))
		le.PutUint32(b[6:], uint32(r.Bytes))
		le.PutUint16(b[10:], uint16(min(r.Duration/(10*time.Microsecond), math.MaxUint16)))
		le.PutUint16(b[12:], uint16(min(r.Interval/(10*time.Microsecond), math.MaxUint16)))
		out = append(out, b...)
	}
	return out
}
