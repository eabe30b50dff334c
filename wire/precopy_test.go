package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"unsafe"

	"github.com/zeebo/xxh3"
)

// Pre-copy (version 3) messages and fields: Hello's stream numbers, FlagPrecopy, Known, Refs, RoundEnd
// and RoundAck. Their valid samples are in samples() (round trips, fuzz seeds).

// withReserved sets the reserved word of entry i of a Refs' entries to v.
func withReserved(entries []byte, i int, v uint32) []byte {
	binary.LittleEndian.PutUint32(entries[i*RefLen+12:], v)
	return entries
}

func helloV3(channel, stream, streams uint64) *mp {
	return body(TypeHello).arr(8).u(3).u(3).u(0).u(channel).bin(zeros(16)).str("").u(stream).u(streams)
}

// helloV4 is helloV3 with version 4's ninth element, resume.
func helloV4(channel, stream, streams uint64, resume bool) *mp {
	return body(TypeHello).arr(9).u(3).u(3).u(0).u(channel).bin(zeros(16)).str("").u(stream).u(streams).boolean(resume)
}
func known(alg, first uint64) *mp          { return body(TypeKnown).arr(4).u(alg).u(first) }
func refs(round, region uint64) *mp        { return body(TypeRefs).arr(3).u(round).u(region) }
func roundAck(round uint64) *mp            { return body(TypeRoundAck).arr(3).u(round) }
func (m *mp) boolean(v bool) *mp           { m.e.EncodeBool(v); return m }
func precopyPages(round, count uint64) *mp { return body(TypePages).arr(7).u(round).u(0).u(0).u(count) }

func TestDecodePrecopyErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		code  ErrorCode
		reqID uint64
	}{
		// Hello: channel and stream numbers.
		{"hello channel 3", helloV3(3, 0, 0).bytes(), CodeMalformed, 0},
		{"hello v2 body on channel precopy", body(TypeHello).arr(6).u(3).u(3).u(0).u(2).bin(zeros(16)).str("").bytes(), CodeMalformed, 0},
		{"hello precopy without streams", body(TypeHello).arr(7).u(3).u(3).u(0).u(2).bin(zeros(16)).str("").u(0).bytes(), CodeMalformed, 0},
		{"hello precopy streams 0", helloV3(2, 0, 0).bytes(), CodeMalformed, 0},
		{"hello precopy streams 17", helloV3(2, 0, MaxStreams+1).bytes(), CodeMalformed, 0},
		{"hello precopy stream 16 of 16", helloV3(2, MaxStreams, MaxStreams).bytes(), CodeMalformed, 0},
		{"hello precopy stream 1 of 1", helloV3(2, 1, 1).bytes(), CodeMalformed, 0},
		{"hello precopy stream 5 of 2", helloV3(2, 5, 2).bytes(), CodeMalformed, 0},
		{"hello urgent with stream", helloV3(0, 1, 0).bytes(), CodeMalformed, 0},
		{"hello urgent with streams", helloV3(0, 0, 1).bytes(), CodeMalformed, 0},
		{"hello bulk with stream of streams", helloV3(1, 0, 2).bytes(), CodeMalformed, 0},
		{"hello bulk with stream, 7 elements", body(TypeHello).arr(7).u(3).u(3).u(0).u(1).bin(zeros(16)).str("").u(1).bytes(), CodeMalformed, 0},
		{"hello stream overflows u8", helloV3(2, 256, 1).bytes(), CodeMalformed, 0},
		{"hello streams overflows u8", helloV3(2, 0, 257).bytes(), CodeMalformed, 0},
		{"hello stream as str", body(TypeHello).arr(8).u(3).u(3).u(0).u(2).bin(zeros(16)).str("").str("0").u(1).bytes(), CodeMalformed, 0},
		{"hello streams negative", body(TypeHello).arr(8).u(3).u(3).u(0).u(2).bin(zeros(16)).str("").u(0).i8(-1).bytes(), CodeMalformed, 0},
		{"hello streams missing", body(TypeHello).arr(8).u(3).u(3).u(0).u(2).bin(zeros(16)).str("").u(0).bytes(), CodeMalformed, 0},
		{"welcome lists BaseRegion", body(TypeWelcome).arr(5).u(3).u(0).u(4096).arr(1).arr(3).u(uint64(BaseRegion)).str("m").u(1).str("").bytes(), CodeMalformed, 0},

		// Pages with FlagPrecopy. Errors carry the frame's req_id field, here the round.
		{"pages precopy last", precopyPages(1, 1).u(uint64(FlagPrecopy | FlagLast | FlagZero)).bin(nil).bin(nil).bytes(), CodeMalformed, 1},
		{"pages precopy pushed", precopyPages(1, 1).u(uint64(FlagPrecopy | FlagPushed | FlagZero)).bin(nil).bin(nil).bytes(), CodeMalformed, 1},
		{"pages precopy last round 0", precopyPages(0, 1).u(uint64(FlagPrecopy | FlagLast)).bin(zeros(8)).bin(zeros(4096)).bytes(), CodeMalformed, 0},
		{"pages precopy round overflows u32", precopyPages(1<<32, 1).u(uint64(FlagPrecopy | FlagZero)).bin(nil).bin(nil).bytes(), CodeMalformed, 1 << 32},
		{"pages req_id 0 without precopy", precopyPages(0, 1).u(uint64(FlagZero)).bin(nil).bin(nil).bytes(), CodeMalformed, 0},
		{"pages precopy count 0", precopyPages(2, 0).u(uint64(FlagPrecopy | FlagZero)).bin(nil).bin(nil).bytes(), CodeMalformed, 2},
		{"pages precopy hashes short", precopyPages(2, 2).u(uint64(FlagPrecopy)).bin(zeros(8)).bin(zeros(8192)).bytes(), CodeMalformed, 2},
		{"pages precopy zero with data", precopyPages(2, 1).u(uint64(FlagPrecopy | FlagZero)).bin(nil).bin(zeros(4096)).bytes(), CodeMalformed, 2},
		{"pages flag 16 with precopy", precopyPages(2, 1).u(uint64(FlagPrecopy | 16)).bin(zeros(8)).bin(zeros(4096)).bytes(), CodeMalformed, 2},

		// Known.
		{"known too few fields", body(TypeKnown).arr(3).u(1).u(0).bin(nil).bytes(), CodeMalformed, 0},
		{"known algorithm 0", known(0, 0).bin(nil).boolean(true).bytes(), CodeMalformed, 0},
		{"known algorithm 3", known(3, 0).bin(zeros(16)).boolean(false).bytes(), CodeMalformed, 0},
		{"known algorithm overflows u8", known(257, 0).bin(zeros(16)).boolean(false).bytes(), CodeMalformed, 0},
		{"known algorithm negative", body(TypeKnown).arr(4).i8(-1).u(0).bin(nil).boolean(true).bytes(), CodeMalformed, 0},
		{"known xxh3 hashes 15 bytes", known(1, 0).bin(zeros(15)).boolean(false).bytes(), CodeMalformed, 0},
		{"known xxh3 hashes 17 bytes", known(1, 0).bin(zeros(17)).boolean(false).bytes(), CodeMalformed, 0},
		{"known sha256 hashes 16 bytes", known(2, 0).bin(zeros(16)).boolean(false).bytes(), CodeMalformed, 0},
		{"known xxh3 1025 hashes", known(1, 0).bin(zeros(1025 * 16)).boolean(false).bytes(), CodeMalformed, 0},
		{"known sha256 1025 hashes", known(2, 0).bin(zeros(1025 * 32)).boolean(false).bytes(), CodeMalformed, 0},
		{"known pages overflow u64", known(1, math.MaxUint64).bin(zeros(32)).boolean(false).bytes(), CodeMalformed, 0},
		{"known bin32 header 4 GiB, no bytes", known(1, 0).raw(0xc6, 0xff, 0xff, 0xff, 0xff).bytes(), CodeMalformed, 0},
		{"known bin16 beyond frame", known(1, 0).raw(0xc5, 0x01, 0x00).raw(zeros(16)...).boolean(true).bytes(), CodeMalformed, 0},
		{"known hashes as str", known(1, 0).str(string(zeros(16))).boolean(true).bytes(), CodeMalformed, 0},
		{"known hashes as array", known(1, 0).us(1, 2).boolean(true).bytes(), CodeMalformed, 0},
		{"known done as int", known(1, 0).bin(nil).u(1).bytes(), CodeMalformed, 0},
		{"known done as nil", known(1, 0).bin(nil).nilv().bytes(), CodeMalformed, 0},
		{"known done missing", body(TypeKnown).arr(4).u(1).u(0).bin(nil).bytes(), CodeMalformed, 0},
		{"known bytes after the array", known(1, 0).bin(nil).boolean(true).raw(0xc3).bytes(), CodeMalformed, 0},

		// Refs.
		{"refs too few fields", body(TypeRefs).arr(2).u(1).u(0).bytes(), CodeMalformed, 0},
		{"refs no entries", refs(1, 0).bin(nil).bytes(), CodeMalformed, 0},
		{"refs entries 31 bytes", refs(1, 0).bin(zeros(RefLen - 1)).bytes(), CodeMalformed, 0},
		{"refs entries 33 bytes", refs(1, 0).bin(zeros(RefLen + 1)).bytes(), CodeMalformed, 0},
		{"refs 1025 entries", refs(1, 0).bin(refEntries(MaxPagesPerRequest + 1)).bytes(), CodeMalformed, 0},
		{"refs reserved nonzero in the first entry", refs(1, 0).bin(withReserved(refEntries(3), 0, 1)).bytes(), CodeMalformed, 0},
		{"refs reserved nonzero in the last entry", refs(1, 0).bin(withReserved(refEntries(3), 2, 1<<31)).bytes(), CodeMalformed, 0},
		{"refs region BaseRegion", refs(1, uint64(BaseRegion)).bin(refEntries(1)).bytes(), CodeMalformed, 0},
		{"refs round overflows u32", refs(1<<32, 0).bin(refEntries(1)).bytes(), CodeMalformed, 0},
		{"refs region overflows u32", refs(0, 1<<32).bin(refEntries(1)).bytes(), CodeMalformed, 0},
		{"refs bin32 header 4 GiB, no bytes", refs(1, 0).raw(0xc6, 0xff, 0xff, 0xff, 0xff).bytes(), CodeMalformed, 0},
		{"refs bin32 header above the limit", refs(1, 0).raw(0xc6, 0, 0, 0x80, 0x20).raw(zeros(32800)...).bytes(), CodeMalformed, 0},
		{"refs entries as str", refs(1, 0).str(string(refEntries(1))).bytes(), CodeMalformed, 0},
		{"refs entries missing", refs(1, 0).bytes(), CodeMalformed, 0},

		// RoundEnd.
		{"round_end too few fields", body(TypeRoundEnd).arr(2).u(1).u(0).bytes(), CodeMalformed, 0},
		{"round_end round overflows u32", body(TypeRoundEnd).arr(3).u(1 << 32).u(0).u(0).bytes(), CodeMalformed, 0},
		{"round_end pages negative", body(TypeRoundEnd).arr(3).u(1).i64(-1).u(0).bytes(), CodeMalformed, 0},
		{"round_end refs as nil", body(TypeRoundEnd).arr(3).u(1).u(0).nilv().bytes(), CodeMalformed, 0},
		{"round_end truncated", body(TypeRoundEnd).arr(3).u(1).u(0).raw(0xcf, 0, 0).bytes(), CodeMalformed, 0},

		// RoundAck.
		{"round_ack too few fields", body(TypeRoundAck).arr(2).u(1).bin(nil).bytes(), CodeMalformed, 0},
		{"round_ack rejected 11 bytes", roundAck(1).bin(zeros(RejectLen - 1)).boolean(true).bytes(), CodeMalformed, 0},
		{"round_ack rejected 13 bytes", roundAck(1).bin(zeros(RejectLen + 1)).boolean(true).bytes(), CodeMalformed, 0},
		{"round_ack 65537 entries", roundAck(1).bin(rejects(MaxRejected + 1)).boolean(true).bytes(), CodeMalformed, 0},
		{"round_ack bin32 header 4 GiB, no bytes", roundAck(1).raw(0xc6, 0xff, 0xff, 0xff, 0xff).bytes(), CodeMalformed, 0},
		{"round_ack bin32 beyond frame", roundAck(1).raw(0xc6, 0, 0, 0, 24).raw(zeros(12)...).boolean(true).bytes(), CodeMalformed, 0},
		{"round_ack rejects BaseRegion", roundAck(1).bin(AppendReject(rejects(2), BaseRegion, 3)).boolean(true).bytes(), CodeMalformed, 0},
		{"round_ack round overflows u32", roundAck(1 << 32).bin(nil).boolean(true).bytes(), CodeMalformed, 0},
		{"round_ack rejected as str", roundAck(1).str("").boolean(true).bytes(), CodeMalformed, 0},
		{"round_ack last as int", roundAck(1).bin(nil).u(1).bytes(), CodeMalformed, 0},
		{"round_ack last missing", body(TypeRoundAck).arr(3).u(1).bin(nil).bytes(), CodeMalformed, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Decode(tc.frame)
			var werr *Error
			if !errors.As(err, &werr) {
				t.Fatalf("Decode = %+v, %v; want a *Error", m, err)
			}
			if werr.Code != tc.code || werr.ReqID != tc.reqID {
				t.Fatalf("Decode error %v (code %d, req %d); want code %s req %d", err, werr.Code, werr.ReqID, tc.code, tc.reqID)
			}
		})
	}
}

func TestDecodePrecopyAccepts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		want  Message
	}{
		{"hello v2 body", body(TypeHello).arr(6).u(2).u(2).u(7).u(1).bin(zeros(16)).str("old").bytes(),
			&Hello{VersionMin: 2, VersionMax: 2, Features: 7, Channel: ChannelBulk, Client: "old"}},
		{"hello 7 elements, urgent", body(TypeHello).arr(7).u(3).u(3).u(0).u(0).bin(zeros(16)).str("").u(0).bytes(),
			&Hello{VersionMin: 3, VersionMax: 3}},
		{"hello precopy 3 of 4", helloV3(2, 3, 4).bytes(),
			&Hello{VersionMin: 3, VersionMax: 3, Channel: ChannelPrecopy, Stream: 3, Streams: 4}},
		{"hello precopy with extra element", body(TypeHello).arr(10).u(3).u(3).u(8).u(2).bin(zeros(16)).str("c").u(0).raw(0xcc, 16).boolean(false).str("x").bytes(),
			&Hello{VersionMin: 3, VersionMax: 3, Features: 8, Channel: ChannelPrecopy, Client: "c", Streams: 16}},
		{"pages precopy round 0 zero", precopyPages(0, 4).u(uint64(FlagPrecopy | FlagZero)).bin(nil).bin(nil).bytes(),
			&Pages{Count: 4, Flags: FlagPrecopy | FlagZero}},
		{"pages precopy round 0 data", precopyPages(0, 1).u(uint64(FlagPrecopy)).bin(pattern(8)).bin(pattern(4096)).bytes(),
			&Pages{Count: 1, Flags: FlagPrecopy, Hashes: pattern(8), Data: pattern(4096)}},
		{"pages precopy round max", precopyPages(math.MaxUint32, 1).u(uint64(FlagPrecopy | FlagZero)).bin(nil).bin(nil).bytes(),
			&Pages{ReqID: math.MaxUint32, Count: 1, Flags: FlagPrecopy | FlagZero}},
		{"known empty done", known(1, 0).bin(nil).boolean(true).bytes(), &Known{Algorithm: ContentXXH3128, Done: true}},
		{"known empty, not done, first set", known(2, 99).bin(nil).boolean(false).bytes(), &Known{Algorithm: ContentSHA256, First: 99}},
		{"known bin32 header", known(2, 5).raw(0xc6, 0, 0, 0, 32).raw(pattern(32)...).boolean(false).bytes(),
			&Known{Algorithm: ContentSHA256, First: 5, Hashes: pattern(32)}},
		{"known last page", known(1, math.MaxUint64).bin(pattern(16)).boolean(true).bytes(),
			&Known{Algorithm: ContentXXH3128, First: math.MaxUint64, Hashes: pattern(16), Done: true}},
		{"known with extra element", body(TypeKnown).arr(5).u(1).u(0).bin(nil).boolean(true).arr(0).bytes(),
			&Known{Algorithm: ContentXXH3128, Done: true}},
		{"refs from the base", refs(0, 3).bin(AppendRef(nil, Ref{Page: 1, SrcRegion: BaseRegion, SrcPage: 2, Check: 3})).bytes(),
			&Refs{Region: 3, Entries: AppendRef(nil, Ref{Page: 1, SrcRegion: BaseRegion, SrcPage: 2, Check: 3})}},
		{"refs with extra element", body(TypeRefs).arr(4).u(9).u(0).bin(refEntries(2)).nilv().bytes(),
			&Refs{Round: 9, Entries: refEntries(2)}},
		{"round_end wide ints", body(TypeRoundEnd).arr(3).raw(0xd3, 0, 0, 0, 0, 0, 0, 0, 9).raw(0xcf, 0, 0, 0, 1, 0, 0, 0, 0).raw(0xd0, 5).bytes(),
			&RoundEnd{Round: 9, Pages: 1 << 32, Refs: 5}},
		{"round_ack empty last", roundAck(4).bin(nil).boolean(true).bytes(), &RoundAck{Round: 4, Last: true}},
		{"round_ack empty, not last", roundAck(4).bin(nil).boolean(false).bytes(), &RoundAck{Round: 4}},
		{"round_ack at the limit", roundAck(1).bin(rejects(MaxRejected)).boolean(true).bytes(),
			&RoundAck{Round: 1, Rejected: rejects(MaxRejected), Last: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.frame)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Decode = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestPrecopyEncoding pins the byte layout of the new messages and of Hello's stream numbers.
func TestPrecopyEncoding(t *testing.T) {
	for _, tc := range []struct {
		m    Message
		want []byte
	}{
		{&Hello{VersionMin: 3, VersionMax: 3, Features: 8, Channel: ChannelPrecopy, Stream: 1, Streams: 2},
			helloV4(2, 1, 2, false).then(func(m *mp) { m.out.b[4] = 8 }).bytes()},
		{&Hello{VersionMin: 3, VersionMax: 3, Channel: ChannelBulk, Resume: true},
			helloV4(1, 0, 0, true).bytes()},
		{&Resident{Region: 1, First: 300, Bits: []byte{0x81, 0x02}, Done: true},
			[]byte{17, 0x94, 1, 0xcd, 1, 44, 0xc4, 2, 0x81, 0x02, 0xc3}},
		{&Known{Algorithm: ContentXXH3128, First: 300, Hashes: pattern(16), Done: true},
			[]byte{11, 0x94, 1, 0xcd, 1, 44, 0xc4, 16, 1, 32, 63, 94, 125, 156, 187, 218, 249, 24, 55, 86, 117, 148, 179, 210, 0xc3}},
		{&Refs{Round: 2, Region: 1, Entries: AppendRef(nil, Ref{Page: 0x0102, SrcRegion: 7, SrcPage: 5, Check: 0xa0b0c0d0e0f00010})},
			append([]byte{12, 0x93, 2, 1, 0xc4, 32,
				0x02, 0x01, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0},
				0x10, 0x00, 0xf0, 0xe0, 0xd0, 0xc0, 0xb0, 0xa0)},
		{&RoundEnd{Round: 1, Pages: 2, Refs: 3}, []byte{13, 0x93, 1, 2, 3}},
		{&RoundAck{Round: 1, Rejected: AppendReject(nil, 0x01020304, 0x05), Last: false},
			[]byte{14, 0x93, 1, 0xc4, 12, 4, 3, 2, 1, 5, 0, 0, 0, 0, 0, 0, 0, 0xc2}},
	} {
		want := tc.want
		if len(want) > 0 && want[0] != byte(TypeHello) { // hello's want comes sealed from mp
			want = seal(want)
		}
		if got := frameOf(t, tc.m)[4:]; !bytes.Equal(got, want) {
			t.Errorf("%s:\n got % x\nwant % x", tc.m.Type(), got, want)
		}
	}
}

func TestPrecopyAccessors(t *testing.T) {
	if ContentHashLen(ContentXXH3128) != 16 || ContentHashLen(ContentSHA256) != 32 || ContentHashLen(0) != 0 || ContentHashLen(3) != 0 {
		t.Fatalf("ContentHashLen: %d %d %d %d", ContentHashLen(ContentXXH3128), ContentHashLen(ContentSHA256), ContentHashLen(0), ContentHashLen(3))
	}

	k := &Known{Algorithm: ContentSHA256, Hashes: pattern(3 * 32)}
	if k.Len() != 3 {
		t.Fatalf("Known.Len = %d", k.Len())
	}
	for i := range 3 {
		h := k.Hash(i)
		if !bytes.Equal(h, k.Hashes[i*32:(i+1)*32]) || &h[0] != &k.Hashes[i*32] || cap(h) != 32 {
			t.Fatalf("Known.Hash(%d) = % x (cap %d)", i, h, cap(h))
		}
	}
	if (&Known{Algorithm: 9, Hashes: zeros(64)}).Len() != 0 {
		t.Fatal("Known.Len of an unknown algorithm is not 0")
	}

	want := []Ref{
		{Page: 0, SrcRegion: 0, SrcPage: 0, Check: 0},
		{Page: math.MaxUint64, SrcRegion: BaseRegion, SrcPage: math.MaxUint64 - 1, Check: math.MaxUint64},
		{Page: 1 << 40, SrcRegion: 3, SrcPage: 17, Check: 0xfeedface},
	}
	var entries []byte
	for _, e := range want {
		entries = AppendRef(entries, e)
	}
	r := &Refs{Entries: entries}
	if r.Len() != len(want) || len(entries) != len(want)*RefLen {
		t.Fatalf("Refs.Len = %d, %d bytes", r.Len(), len(entries))
	}
	for i, e := range want {
		if got := r.Entry(i); got != e {
			t.Errorf("Refs.Entry(%d) = %+v, want %+v", i, got, e)
		}
		if reserved := binary.LittleEndian.Uint32(entries[i*RefLen+12:]); reserved != 0 {
			t.Errorf("AppendRef wrote reserved %#x", reserved)
		}
	}

	a := &RoundAck{Rejected: AppendReject(AppendReject(nil, 3, math.MaxUint64), BaseRegion-1, 0)}
	if a.Len() != 2 {
		t.Fatalf("RoundAck.Len = %d", a.Len())
	}
	if reg, page := a.Entry(0); reg != 3 || page != math.MaxUint64 {
		t.Errorf("RoundAck.Entry(0) = %d, %d", reg, page)
	}
	if reg, page := a.Entry(1); reg != BaseRegion-1 || page != 0 {
		t.Errorf("RoundAck.Entry(1) = %d, %d", reg, page)
	}
}

// inside reports whether b lies within frame.
func inside(b, frame []byte) bool {
	if len(b) == 0 {
		return false
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(frame)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= start && p+uintptr(len(b)) <= start+uintptr(len(frame))
}

// TestPrecopyAliasing checks that decoded hashes, entries and rejects point into the frame, so that
// decoding the largest RoundAck (768 KiB) allocates nothing for its list, and that bin headers claiming
// more than the limit or than the frame holds are refused without allocating.
func TestPrecopyAliasing(t *testing.T) {
	for _, m := range []Message{
		&Known{Algorithm: ContentSHA256, Hashes: pattern(MaxPagesPerRequest * 32)},
		&Refs{Entries: refEntries(MaxPagesPerRequest)},
		&RoundAck{Rejected: rejects(MaxRejected), Last: true},
	} {
		frame := frameOf(t, m)[4:]
		got, err := Decode(frame)
		if err != nil {
			t.Fatalf("%s: %v", m.Type(), err)
		}
		var b []byte
		switch got := got.(type) {
		case *Known:
			b = got.Hashes
		case *Refs:
			b = got.Entries
		case *RoundAck:
			b = got.Rejected
		}
		if !inside(b, frame) {
			t.Errorf("%s: the decoded list does not alias the frame", m.Type())
		}
		if n := bytesPerDecode(frame); n > 1024 {
			t.Errorf("%s: %d bytes allocated per Decode of a %d-byte frame", m.Type(), n, len(frame))
		}
	}
	for _, frame := range [][]byte{
		known(1, 0).raw(0xc6, 0xff, 0xff, 0xff, 0xff).bytes(),
		refs(1, 0).raw(0xc6, 0x7f, 0xff, 0xff, 0xff).bytes(),
		roundAck(1).raw(0xc6, 0xff, 0xff, 0xff, 0xff).bytes(),
		roundAck(1).raw(0xc6, 0, 0x0c, 0, 0).bytes(), // 768 KiB: at the limit, but not in the frame
	} {
		if _, err := Decode(frame); err == nil {
			t.Fatalf("% x accepted", frame)
		}
		if n := bytesPerDecode(frame); n > 1024 {
			t.Errorf("% x: %d bytes allocated per Decode", frame, n)
		}
	}
}

// TestPrecopyStream writes one pre-copy exchange through a Writer and reads it back through a Reader
// with the page size set.
func TestPrecopyStream(t *testing.T) {
	msgs := []Message{
		&Hello{VersionMin: Version, VersionMax: Version, Features: FeaturePrecopy, Channel: ChannelPrecopy, Stream: 0, Streams: 2},
		&Welcome{Version: Version, Features: FeaturePrecopy, PageSize: 4096, Regions: []Region{{ID: 0, Name: "mem", Pages: 64}}},
		&Known{Algorithm: ContentXXH3128, First: 0, Hashes: pattern(2 * 16)},
		&Known{Algorithm: ContentXXH3128, First: 2, Hashes: pattern(16), Done: true},
		testPages(64, 4096, FlagPrecopy),
		&Pages{ReqID: 0, Region: 0, Page: 64, Count: 1, Flags: FlagPrecopy | FlagZero},
		&Refs{Round: 0, Region: 0, Entries: refEntries(3)},
		&RoundEnd{Round: 0, Pages: 65, Refs: 3},
		&RoundAck{Round: 0, Rejected: rejects(2)},
		&RoundAck{Round: 0, Last: true},
		&Bye{Reason: "pre-copy done"},
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, m := range msgs {
		if err := w.WriteMessage(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&buf)
	r.SetPageSize(4096)
	for i, want := range msgs {
		got, err := r.ReadMessage()
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("message %d: %+v, %v; want %+v", i, got, err, want)
		}
	}
}

// TestXXH3LowIs64 checks what docs/protocol.md promises of ContentXXH3128: for inputs longer than 240
// bytes, so for every page, the low 64 bits of the xxh3-128 (the last 8 bytes of its big-endian form)
// are the xxh3-64, so that one pass over a page yields both its content hash and its Pages hash.
func TestXXH3LowIs64(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pages := [][]byte{make([]byte, 4096), make([]byte, 2<<20), bytes.Repeat([]byte{0xff}, 4096), make([]byte, 241)}
	for range 64 {
		p := make([]byte, 4096)
		for i := 0; i < len(p); i += 8 {
			binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
		}
		pages = append(pages, p)
	}
	for i, p := range pages {
		h128 := xxh3.Hash128(p)
		h64 := xxh3.Hash(p)
		if h128.Lo != h64 {
			t.Fatalf("page %d (%d bytes): xxh3-128 low %#x, xxh3-64 %#x", i, len(p), h128.Lo, h64)
		}
		b := h128.Bytes()
		if binary.BigEndian.Uint64(b[8:]) != h64 || binary.BigEndian.Uint64(b[:8]) != h128.Hi {
			t.Fatalf("page %d: Bytes() % x is not big-endian high first", i, b)
		}
	}
}
