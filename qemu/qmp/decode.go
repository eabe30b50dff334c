package qmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// MaxLine is the longest QMP message the client accepts, in bytes.
const MaxLine = 4 << 20

// ErrProtocol is wrapped by errors about messages that are not valid QMP.
var ErrProtocol = errors.New("qmp protocol error")

// Error is an error QEMU returned for a command.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("qmp %s: %s", e.Class, e.Desc) }

// Event is an asynchronous QMP event.
type Event struct {
	Name string
	Data json.RawMessage
	// Seconds and Microseconds are QEMU's timestamp of the event.
	Seconds, Microseconds int64
}

type kind int

const (
	kindGreeting kind = iota + 1
	kindReturn
	kindError
	kindEvent
)

// message is one decoded server message.
type message struct {
	kind   kind
	id     string // "" if absent or not a string
	ret    json.RawMessage
	err    *Error
	event  Event
	greet  json.RawMessage
	hasID  bool
	rawLen int
}

// decode parses one server message. It accepts exactly one JSON object carrying exactly one of
// the keys QMP, return, error, event.
func decode(line []byte) (message, error) {
	line = bytes.TrimSpace(line)
	if len(line) > MaxLine {
		return message{}, fmt.Errorf("%w: message of %d bytes (max %d)", ErrProtocol, len(line), MaxLine)
	}
	var raw struct {
		QMP       json.RawMessage `json:"QMP"`
		Return    json.RawMessage `json:"return"`
		Error     json.RawMessage `json:"error"`
		Event     json.RawMessage `json:"event"`
		Data      json.RawMessage `json:"data"`
		ID        json.RawMessage `json:"id"`
		Timestamp *struct {
			Seconds      int64 `json:"seconds"`
			Microseconds int64 `json:"microseconds"`
		} `json:"timestamp"`
	}
	if len(line) == 0 || line[0] != '{' {
		return message{}, fmt.Errorf("%w: not a JSON object: %.40q", ErrProtocol, line)
	}
	if err := json.Unmarshal(line, &raw); err != nil {
		return message{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	m := message{rawLen: len(line)}
	n := 0
	for _, f := range []json.RawMessage{raw.QMP, raw.Return, raw.Error, raw.Event} {
		if f != nil {
			n++
		}
	}
	if n != 1 {
		return message{}, fmt.Errorf("%w: want exactly one of QMP, return, error, event in %.60q", ErrProtocol, line)
	}
	if raw.ID != nil {
		m.hasID = true
		_ = json.Unmarshal(raw.ID, &m.id) // a non-string id is not ours: id stays ""
	}
	switch {
	case raw.QMP != nil:
		m.kind, m.greet = kindGreeting, raw.QMP
	case raw.Return != nil:
		m.kind, m.ret = kindReturn, raw.Return
	case raw.Error != nil:
		var e Error
		if err := json.Unmarshal(raw.Error, &e); err != nil || e.Class == "" {
			return message{}, fmt.Errorf("%w: error without a class: %.60q", ErrProtocol, raw.Error)
		}
		m.kind, m.err = kindError, &e
	case raw.Event != nil:
		var name string
		if err := json.Unmarshal(raw.Event, &name); err != nil || name == "" {
			return message{}, fmt.Errorf("%w: event without a name: %.60q", ErrProtocol, raw.Event)
		}
		m.kind = kindEvent
		m.event = Event{Name: name, Data: raw.Data}
		if raw.Timestamp != nil {
			m.event.Seconds, m.event.Microseconds = raw.Timestamp.Seconds, raw.Timestamp.Microseconds
		}
	}
	return m, nil
}
