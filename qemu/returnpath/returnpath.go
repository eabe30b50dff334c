package returnpath

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Type is a return-path message type (enum mig_rp_message_type in QEMU's migration/migration.h).
type Type uint16

// The message types QEMU defines up to 8.1.
const (
	Shut          Type = 1
	Pong          Type = 2
	ReqPagesID    Type = 3
	ReqPages      Type = 4
	RecvBitmap    Type = 5
	ResumeAck     Type = 6
	SwitchoverAck Type = 7
)

const (
	// HeaderSize is the size of a frame header: u16 type, u16 len.
	HeaderSize = 4
	// MaxPayload is the largest payload QEMU's source accepts (its buffer is 512 bytes).
	MaxPayload = 512
	// MaxName is the longest RAM block name a frame can carry (a one-byte length).
	MaxName = 255
	// BitmapEnding is the end mark that follows a RECV_BITMAP bitmap
	// (RAMBLOCK_RECV_BITMAP_ENDING in QEMU's migration/ram.c).
	BitmapEnding uint64 = 0x0123456789abcdef
)

// ErrMalformed is wrapped by every error about bytes that are not a valid return-path stream.
var ErrMalformed = errors.New("malformed return-path message")

var typeNames = [...]string{"INVALID", "SHUT", "PONG", "REQ_PAGES_ID", "REQ_PAGES", "RECV_BITMAP", "RESUME_ACK", "SWITCHOVER_ACK"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint16(t))
}

// fixedLen is the payload length of each fixed-size type, -1 for the variable ones.
func fixedLen(t Type) int {
	switch t {
	case Shut, Pong, ResumeAck:
		return 4
	case ReqPages:
		return 12
	case SwitchoverAck:
		return 0
	case ReqPagesID, RecvBitmap:
		return -1
	}
	return -2
}

// Message is one decoded return-path message. Which fields are meaningful depends on Type:
//
//	Shut, Pong, ResumeAck: Value
//	ReqPagesID:            Start, Len, Block
//	ReqPages:              Start, Len
//	RecvBitmap:            Block (the bitmap that follows the frame is read by Reader.Bitmap)
//	SwitchoverAck:         nothing
type Message struct {
	Type  Type
	Value uint32
	Start uint64
	Len   uint32
	Block string
}

func (m Message) String() string {
	switch m.Type {
	case ReqPagesID:
		return fmt.Sprintf("REQ_PAGES_ID start=%#x len=%d id=%q", m.Start, m.Len, m.Block)
	case ReqPages:
		return fmt.Sprintf("REQ_PAGES start=%#x len=%d", m.Start, m.Len)
	case RecvBitmap:
		return fmt.Sprintf("RECV_BITMAP id=%q", m.Block)
	case SwitchoverAck:
		return m.Type.String()
	}
	return fmt.Sprintf("%s %d", m.Type, m.Value)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// CheckHeader validates a frame header the way QEMU's source does (type in 1..7, the fixed
// length of fixed-size types, len <= MaxPayload) plus the minimum length of the variable types.
func CheckHeader(t Type, n int) error {
	fl := fixedLen(t)
	switch {
	case fl == -2:
		return malformed("unknown type %d", uint16(t))
	case n > MaxPayload:
		return malformed("%s payload of %d bytes (max %d)", t, n, MaxPayload)
	case fl >= 0 && n != fl:
		return malformed("%s payload of %d bytes (want %d)", t, n, fl)
	case t == ReqPagesID && n < 14:
		return malformed("%s payload of %d bytes (min 14)", t, n)
	case t == RecvBitmap && n < 2:
		return malformed("%s payload of %d bytes (min 2)", t, n)
	}
	return nil
}

// Parse decodes the payload of one frame of type t. The returned Message does not alias payload.
func Parse(t Type, payload []byte) (Message, error) {
	if err := CheckHeader(t, len(payload)); err != nil {
		return Message{}, err
	}
	m := Message{Type: t}
	switch t {
	case Shut, Pong, ResumeAck:
		m.Value = binary.BigEndian.Uint32(payload)
	case ReqPages:
		m.Start = binary.BigEndian.Uint64(payload)
		m.Len = binary.BigEndian.Uint32(payload[8:])
	case ReqPagesID:
		m.Start = binary.BigEndian.Uint64(payload)
		m.Len = binary.BigEndian.Uint32(payload[8:])
		name, err := parseName(t, payload[12:])
		if err != nil {
			return Message{}, err
		}
		m.Block = name
	case RecvBitmap:
		name, err := parseName(t, payload)
		if err != nil {
			return Message{}, err
		}
		m.Block = name
	}
	return m, nil
}

// parseName decodes `u8 n | n bytes`, which must fill b exactly.
func parseName(t Type, b []byte) (string, error) {
	n := int(b[0])
	if n == 0 {
		return "", malformed("%s with an empty block name", t)
	}
	if len(b) != 1+n {
		return "", malformed("%s block name of %d bytes in %d bytes of payload", t, n, len(b)-1)
	}
	return string(b[1:]), nil
}

// Append appends m's frame to dst. It returns an error for a Message no valid frame encodes (an
// unknown type, an empty or too long block name).
func (m Message) Append(dst []byte) ([]byte, error) {
	var p [MaxPayload]byte
	var n int
	switch m.Type {
	case Shut, Pong, ResumeAck:
		binary.BigEndian.PutUint32(p[:], m.Value)
		n = 4
	case ReqPages:
		binary.BigEndian.PutUint64(p[:], m.Start)
		binary.BigEndian.PutUint32(p[8:], m.Len)
		n = 12
	case ReqPagesID:
		if err := checkName(m.Block); err != nil {
			return dst, err
		}
		binary.BigEndian.PutUint64(p[:], m.Start)
		binary.BigEndian.PutUint32(p[8:], m.Len)
		p[12] = byte(len(m.Block))
		n = 13 + copy(p[13:], m.Block)
	case RecvBitmap:
		if err := checkName(m.Block); err != nil {
			return dst, err
		}
		p[0] = byte(len(m.Block))
		n = 1 + copy(p[1:], m.Block)
	case SwitchoverAck:
	default:
		return dst, fmt.Errorf("encode %s: unknown type", m.Type)
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(m.Type))
	dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	return append(dst, p[:n]...), nil
}

func checkName(name string) error {
	if len(name) == 0 || len(name) > MaxName {
		return fmt.Errorf("block name of %d bytes (want 1..%d)", len(name), MaxName)
	}
	return nil
}

// AppendReqPagesID appends a REQ_PAGES_ID frame asking for len bytes at start of block.
func AppendReqPagesID(dst []byte, start uint64, length uint32, block string) ([]byte, error) {
	return Message{Type: ReqPagesID, Start: start, Len: length, Block: block}.Append(dst)
}
