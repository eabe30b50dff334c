package qmp

import (
	"errors"
	"testing"
)

// FuzzDecode checks that decode never panics, fails only with ErrProtocol, and that an accepted
// message has exactly one kind with its payload.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}`,
		`{"return": {}, "id": "pw-1"}`,
		`{"return": "text\r\n"}`,
		`{"id": 5, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}`,
		`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "STOP"}`,
		`{"event": "MIGRATION", "data": {"status": "postcopy-active"}, "timestamp": {"seconds": 1, "microseconds": 2}}`,
		`{"return": {}, "event": "X"}`,
		`{"error": {"desc": "no class"}}`,
		`[1,2]`,
		`{"return": {}}{"return": {}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := decode(line)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("decode error %v does not wrap ErrProtocol", err)
			}
			return
		}
		switch m.kind {
		case kindGreeting:
			if m.greet == nil {
				t.Fatal("greeting without payload")
			}
		case kindReturn:
			if m.ret == nil {
				t.Fatal("return without payload")
			}
		case kindError:
			if m.err == nil || m.err.Class == "" {
				t.Fatal("error without class")
			}
		case kindEvent:
			if m.event.Name == "" {
				t.Fatal("event without name")
			}
		default:
			t.Fatalf("kind %d", m.kind)
		}
	})
}
