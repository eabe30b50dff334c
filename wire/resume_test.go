package wire

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// TestResidentMessages: Resident and Hello.Resume reject what the spec forbids, and decode what it
// allows (an eight-element Hello is not resuming).
func TestResidentMessages(t *testing.T) {
	for _, m := range []Message{
		&Resident{Region: 1},
		&Resident{Region: 1, Bits: make([]byte, MaxResidentBytes+1)},
		&Resident{Region: BaseRegion, Bits: []byte{1}},
		&Resident{Region: 1, First: math.MaxUint64 - 6, Bits: []byte{1}},
		&Hello{VersionMin: Version, VersionMax: Version, Channel: ChannelPrecopy, Streams: 1, Resume: true},
	} {
		if _, err := AppendFrame(nil, m); err == nil {
			t.Errorf("%s %+v encoded, want malformed", m.Type(), m)
		}
	}
	f, err := AppendFrame(nil, &Resident{Region: 2, First: 8, Bits: []byte{0x05, 0x80}, Done: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(f[4:])
	if err != nil {
		t.Fatal(err)
	}
	r := m.(*Resident)
	var got []uint64
	for i := range r.Pages() {
		if r.Has(i) {
			got = append(got, r.First+i)
		}
	}
	if r.Region != 2 || !r.Done || r.Pages() != 16 || len(got) != 3 || got[0] != 8 || got[1] != 10 || got[2] != 23 {
		t.Fatalf("decoded %+v, resident pages %v", r, got)
	}

	// A version 4 Hello written before resume existed: eight elements.
	var body bytes.Buffer
	e := msgpack.NewEncoder(&body)
	e.EncodeArrayLen(8)
	for _, v := range []uint64{Version, Version, FeaturePush, uint64(ChannelUrgent)} {
		e.EncodeUint(v)
	}
	e.EncodeBytes(make([]byte, SessionLen))
	e.EncodeString("old")
	e.EncodeUint(0)
	e.EncodeUint(0)
	h, err := Decode(AppendChecksum(append([]byte{byte(TypeHello)}, body.Bytes()...)))
	if err != nil {
		t.Fatal(err)
	}
	if hello := h.(*Hello); hello.Resume || hello.Client != "old" {
		t.Fatalf("eight-element hello decoded as %+v", hello)
	}
	// resume must be a boolean.
	body.Reset()
	e.EncodeArrayLen(9)
	for _, v := range []uint64{Version, Version, 0, uint64(ChannelBulk)} {
		e.EncodeUint(v)
	}
	e.EncodeBytes(make([]byte, SessionLen))
	e.EncodeString("")
	e.EncodeUint(0)
	e.EncodeUint(0)
	e.EncodeUint(1)
	_, err = Decode(AppendChecksum(append([]byte{byte(TypeHello)}, body.Bytes()...)))
	var werr *Error
	if !errors.As(err, &werr) || werr.Code != CodeMalformed {
		t.Fatalf("hello with resume 1: %v, want malformed", err)
	}
}
