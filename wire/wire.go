package wire

import (
	"encoding/binary"
	"fmt"
)

// Version is the protocol version this package speaks. It is the only version: a server and a target
// both offer exactly [Version, Version] and refuse anything else.
const Version = 2

// Frame and message limits from docs/protocol.md.
const (
	// MaxFrameSize is the largest value of a frame's length field (type byte plus body).
	MaxFrameSize = 4<<20 + 64<<10
	// MaxPagesPerRequest bounds Request.Count, Pages.Count, the pages listed in a Push and each of the
	// two lists of a Feedback.
	MaxPagesPerRequest = 1024
	// MaxRegions bounds the regions listed in a Welcome.
	MaxRegions = 1024
	// MinPageSize and MaxPageSize bound Welcome.PageSize. MaxPageSize is set by MaxFrameSize:
	// a Pages frame must be able to carry at least one page.
	MinPageSize = 4096
	MaxPageSize = 4 << 20
	// MaxNameLen bounds Hello.Client, Welcome.Server, Region.Name and Bye.Reason, in bytes.
	MaxNameLen = 256
	// MaxErrorMessageLen bounds Error.Message, in bytes.
	MaxErrorMessageLen = 1024
	// SessionLen is the length of Hello.Session.
	SessionLen = 16
	// HashLen is the length of one page hash in Pages.Hashes.
	HashLen = 8
)

// Feature bits, negotiated in Hello/Welcome as the intersection of both sides' bits.
const (
	// FeatureZeroPages: the server may send zero runs (FlagZero).
	FeatureZeroPages uint64 = 1 << 0
	// FeaturePageHashes is reserved: always set (hashes are mandatory).
	FeaturePageHashes uint64 = 1 << 1
	// FeaturePush: the target accepts pushed pages (Push notices and Pages frames with FlagPushed) on
	// its urgent connection and may send Feedback. A server pushes only when this bit was negotiated.
	FeaturePush uint64 = 1 << 2
)

// Channels, carried in Hello.Channel.
const (
	ChannelUrgent uint8 = 0
	ChannelBulk   uint8 = 1
)

// Request priorities, carried in Request.Priority.
const (
	PriorityDemand     uint8 = 0
	PriorityBackground uint8 = 1
)

// Pages flags.
const (
	// FlagZero: every page of the run is all zero bytes; Hashes and Data are empty.
	FlagZero uint8 = 1 << 0
	// FlagLast: the final frame of its request (or, with FlagPushed, of its push).
	FlagLast uint8 = 1 << 1
	// FlagPushed: the frame is part of a push; its ReqID is that of the Push notice it belongs to.
	FlagPushed uint8 = 1 << 2

	knownFlags = FlagZero | FlagLast | FlagPushed
)

// DigestXXH3Over64 is Digest.Algorithm 1: the xxh3-128 of the concatenation, in page order, of every
// page's xxh3-64 hash as 8 little-endian bytes.
const DigestXXH3Over64 uint8 = 1

// Type is a frame's type byte.
type Type uint8

// Message types.
const (
	TypeHello         Type = 1
	TypeWelcome       Type = 2
	TypeRequest       Type = 3
	TypePages         Type = 4
	TypeError         Type = 5
	TypeDigestRequest Type = 6
	TypeDigest        Type = 7
	TypeBye           Type = 8
	TypePush          Type = 9
	TypeFeedback      Type = 10
)

var typeNames = [...]string{
	TypeHello:         "hello",
	TypeWelcome:       "welcome",
	TypeRequest:       "request",
	TypePages:         "pages",
	TypeError:         "error",
	TypeDigestRequest: "digest_request",
	TypeDigest:        "digest",
	TypeBye:           "bye",
	TypePush:          "push",
	TypeFeedback:      "feedback",
}

func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// ErrorCode is the code carried by an Error message.
type ErrorCode uint16

// Error codes.
const (
	CodeMalformed          ErrorCode = 1
	CodeFrameTooLarge      ErrorCode = 2
	CodeUnsupportedVersion ErrorCode = 3
	CodeOutOfRange         ErrorCode = 4
	CodeUnknownType        ErrorCode = 5
	CodeUnknownRegion      ErrorCode = 6
	CodeSourceRead         ErrorCode = 7
	CodeProtocol           ErrorCode = 8
	CodeShutdown           ErrorCode = 9
	CodeInternal           ErrorCode = 10

	// NumCodes is one more than the highest code defined by version 2, so that an array indexed by
	// ErrorCode can count them.
	NumCodes = 11
)

var codeNames = [...]string{
	CodeMalformed:          "malformed",
	CodeFrameTooLarge:      "frame_too_large",
	CodeUnsupportedVersion: "unsupported_version",
	CodeOutOfRange:         "out_of_range",
	CodeUnknownType:        "unknown_type",
	CodeUnknownRegion:      "unknown_region",
	CodeSourceRead:         "source_read",
	CodeProtocol:           "protocol",
	CodeShutdown:           "shutdown",
	CodeInternal:           "internal",
}

// String returns the code's name from the spec ("malformed", "frame_too_large", ...).
func (c ErrorCode) String() string {
	if int(c) < len(codeNames) && codeNames[c] != "" {
		return codeNames[c]
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// Message is one of the protocol's messages: *Hello, *Welcome, *Request, *Pages, *Error,
// *DigestRequest, *Digest, *Bye, *Push or *Feedback. The set is closed.
type Message interface {
	// Type returns the message's frame type.
	Type() Type
	// check validates field ranges. pageSize is the negotiated page size, or 0 when unknown.
	check(pageSize int) error
}

// Hello is the first frame on every connection, target to server.
type Hello struct {
	VersionMin, VersionMax uint16
	Features               uint64
	Channel                uint8
	Session                [SessionLen]byte
	Client                 string
}

// Welcome is the server's reply to Hello.
type Welcome struct {
	Version  uint16
	Features uint64
	PageSize uint32
	Regions  []Region
	Server   string
}

// Region describes one region a server holds. Its pages are numbered 0 .. Pages-1.
type Region struct {
	ID    uint32
	Name  string
	Pages uint64
}

// Request asks for pages [Page, Page+Count) of a region.
type Request struct {
	ReqID    uint64
	Region   uint32
	Page     uint64
	Count    uint32
	Priority uint8
}

// Pages carries one run of pages answering a Request or, with FlagPushed, one run of a Push.
//
// Hashes holds Count little-endian xxh3-64 hashes (HashLen bytes each) and Data holds Count pages, both
// empty when Flags has FlagZero. In a message returned by Reader.ReadMessage both alias the reader's
// buffer; in one returned by Decode they alias the frame.
type Pages struct {
	ReqID  uint64
	Region uint32
	Page   uint64
	Count  uint32
	Flags  uint8
	Hashes []byte
	Data   []byte
}

// Hash returns the hash of the i-th page of the run. It panics if i is out of range, like an index.
func (p *Pages) Hash(i int) uint64 {
	return binary.LittleEndian.Uint64(p.Hashes[i*HashLen:])
}

// Zero reports whether the run is all zero pages.
func (p *Pages) Zero() bool { return p.Flags&FlagZero != 0 }

// Last reports whether this is the final frame of its request, or of its push when Pushed.
func (p *Pages) Last() bool { return p.Flags&FlagLast != 0 }

// Pushed reports whether the run is part of a push: ReqID is then the req_id of its Push notice.
func (p *Pages) Pushed() bool { return p.Flags&FlagPushed != 0 }

// Error is the Error message. It also implements error, so that decoding and validation failures
// carry the code to send back: a caller gets it with errors.As(err, &werr).
type Error struct {
	Code    ErrorCode
	ReqID   uint64
	Message string
}

func (e *Error) Error() string {
	if e.ReqID != 0 {
		return fmt.Sprintf("%s (req %d): %s", e.Code, e.ReqID, e.Message)
	}
	return e.Code.String() + ": " + e.Message
}

// DigestRequest asks for the digest of a whole region.
type DigestRequest struct {
	ReqID  uint64
	Region uint32
}

// Digest answers a DigestRequest. Sum is the 128-bit value big-endian (high 64 bits first).
type Digest struct {
	ReqID     uint64
	Region    uint32
	Algorithm uint8
	Sum       [16]byte
}

// Bye is a graceful close, either way.
type Bye struct {
	Reason string
}

// Push announces, server to target on the urgent connection, pages the server will send unrequested
// right after the final frame of a demand reply. ReqID is that demand request's req_id; the pages follow
// as Pages frames with FlagPushed and the same ReqID, in ascending page order, covering exactly Pages,
// the final one with FlagLast. Pages lists 1 to MaxPagesPerRequest page numbers, strictly ascending.
// Sent only when FeaturePush was negotiated.
type Push struct {
	ReqID  uint64
	Region uint32
	Pages  []uint64
}

// Feedback tells the server, target to server, which pushed pages of a region the target observed
// touched (Used) and which expired untouched (Unused). Each list holds at most MaxPagesPerRequest
// pages, in any order, and not both are empty. Sent only when FeaturePush was negotiated.
type Feedback struct {
	Region uint32
	Used   []uint64
	Unused []uint64
}

func (*Hello) Type() Type         { return TypeHello }
func (*Welcome) Type() Type       { return TypeWelcome }
func (*Request) Type() Type       { return TypeRequest }
func (*Pages) Type() Type         { return TypePages }
func (*Error) Type() Type         { return TypeError }
func (*DigestRequest) Type() Type { return TypeDigestRequest }
func (*Digest) Type() Type        { return TypeDigest }
func (*Bye) Type() Type           { return TypeBye }
func (*Push) Type() Type          { return TypePush }
func (*Feedback) Type() Type      { return TypeFeedback }

// ValidPageSize reports whether n is a page size the protocol allows: a power of two in
// [MinPageSize, MaxPageSize].
func ValidPageSize(n int) bool {
	return n >= MinPageSize && n <= MaxPageSize && n&(n-1) == 0
}

func malformed(format string, args ...any) *Error {
	return &Error{Code: CodeMalformed, Message: fmt.Sprintf(format, args...)}
}

func checkName(what, s string, limit int) error {
	if len(s) > limit {
		return malformed("%s is %d bytes, limit %d", what, len(s), limit)
	}
	return nil
}

func (m *Hello) check(int) error {
	if m.VersionMin > m.VersionMax {
		return malformed("hello: version_min %d > version_max %d", m.VersionMin, m.VersionMax)
	}
	if m.Channel != ChannelUrgent && m.Channel != ChannelBulk {
		return malformed("hello: channel %d", m.Channel)
	}
	return checkName("hello: client", m.Client, MaxNameLen)
}

func (m *Welcome) check(int) error {
	if !ValidPageSize(int(m.PageSize)) {
		return malformed("welcome: page_size %d is not a power of two in [%d, %d]", m.PageSize, MinPageSize, MaxPageSize)
	}
	if len(m.Regions) > MaxRegions {
		return malformed("welcome: %d regions, limit %d", len(m.Regions), MaxRegions)
	}
	for i := range m.Regions {
		if err := checkName("welcome: region name", m.Regions[i].Name, MaxNameLen); err != nil {
			return err
		}
	}
	return checkName("welcome: server", m.Server, MaxNameLen)
}

func (m *Request) check(int) error {
	if m.ReqID == 0 {
		return malformed("request: req_id 0 is reserved")
	}
	if m.Priority != PriorityDemand && m.Priority != PriorityBackground {
		return &Error{Code: CodeMalformed, ReqID: m.ReqID, Message: fmt.Sprintf("request: priority %d", m.Priority)}
	}
	if m.Count == 0 || m.Count > MaxPagesPerRequest {
		return &Error{Code: CodeOutOfRange, ReqID: m.ReqID,
			Message: fmt.Sprintf("request: count %d not in [1, %d]", m.Count, MaxPagesPerRequest)}
	}
	return nil
}

func (m *Pages) check(pageSize int) error {
	if m.ReqID == 0 {
		return malformed("pages: req_id 0 is reserved")
	}
	if m.Count == 0 || m.Count > MaxPagesPerRequest {
		return malformed("pages: count %d not in [1, %d]", m.Count, MaxPagesPerRequest)
	}
	if m.Flags&^knownFlags != 0 {
		return malformed("pages: unknown flags %#x", m.Flags&^knownFlags)
	}
	n := int(m.Count)
	if m.Flags&FlagZero != 0 {
		if len(m.Hashes) != 0 || len(m.Data) != 0 {
			return malformed("pages: zero run with %d hash bytes and %d data bytes", len(m.Hashes), len(m.Data))
		}
		return nil
	}
	if len(m.Hashes) != n*HashLen {
		return malformed("pages: hashes are %d bytes, want %d", len(m.Hashes), n*HashLen)
	}
	if pageSize != 0 {
		if len(m.Data) != n*pageSize {
			return malformed("pages: data is %d bytes, want %d", len(m.Data), n*pageSize)
		}
		return nil
	}
	if len(m.Data)%n != 0 || !ValidPageSize(len(m.Data)/n) {
		return malformed("pages: data is %d bytes, not %d pages of a valid page size", len(m.Data), n)
	}
	return nil
}

func (m *Error) check(int) error {
	return checkName("error: message", m.Message, MaxErrorMessageLen)
}

func (m *DigestRequest) check(int) error {
	if m.ReqID == 0 {
		return malformed("digest_request: req_id 0 is reserved")
	}
	return nil
}

func (m *Digest) check(int) error {
	if m.ReqID == 0 {
		return malformed("digest: req_id 0 is reserved")
	}
	return nil
}

func (m *Bye) check(int) error {
	return checkName("bye: reason", m.Reason, MaxNameLen)
}

func (m *Push) check(int) error {
	if m.ReqID == 0 {
		return malformed("push: req_id 0 is reserved")
	}
	if len(m.Pages) == 0 || len(m.Pages) > MaxPagesPerRequest {
		return malformed("push: %d pages not in [1, %d]", len(m.Pages), MaxPagesPerRequest)
	}
	for i := 1; i < len(m.Pages); i++ {
		if m.Pages[i] <= m.Pages[i-1] {
			return malformed("push: pages not strictly ascending: page %d after %d at index %d", m.Pages[i], m.Pages[i-1], i)
		}
	}
	return nil
}

func (m *Feedback) check(int) error {
	if len(m.Used) > MaxPagesPerRequest {
		return malformed("feedback: %d used pages, limit %d", len(m.Used), MaxPagesPerRequest)
	}
	if len(m.Unused) > MaxPagesPerRequest {
		return malformed("feedback: %d unused pages, limit %d", len(m.Unused), MaxPagesPerRequest)
	}
	if len(m.Used) == 0 && len(m.Unused) == 0 {
		return malformed("feedback: used and unused are both empty")
	}
	return nil
}
