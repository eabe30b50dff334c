package wire

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
)

// Version is the protocol version this package speaks. It is the only version: a server and a target
// both offer exactly [Version, Version] and refuse anything else: a version 3 peer gets
// CodeUnsupportedVersion.
const Version = 4

// TrailerLen is the length of a frame's checksum trailer: the CRC-32C (Castagnoli), big-endian, of the
// type byte and the body, Pages.Data excepted (every page carries its own xxh3-64). It catches a
// corrupted header field (a page number, a region) that no page hash covers.
const TrailerLen = 4

// castagnoli is CRC-32C's table (hardware-accelerated where the CPU has it).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame and message limits from docs/protocol.md.
const (
	// MaxFrameSize is the largest value of a frame's length field (type byte, body and checksum).
	MaxFrameSize = 4<<20 + 64<<10
	// MaxPagesPerRequest bounds Request.Count, Pages.Count, the pages listed in a Push, each of the
	// two lists of a Feedback, the hashes of a Known and the entries of a Refs.
	MaxPagesPerRequest = 1024
	// MaxRegions bounds the regions listed in a Welcome.
	MaxRegions = 1024
	// MaxStreams bounds Hello.Streams: the pre-copy connections of one session.
	MaxStreams = 16
	// MaxRejected bounds the entries of one RoundAck.
	MaxRejected = 65536
	// MaxInvalidate bounds the pages of one Invalidate.
	MaxInvalidate = 65536
	// MaxHandoverState bounds Handover.State, in bytes.
	MaxHandoverState = 1 << 20
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
	// RefLen is the length of one entry of Refs.Entries (see Ref).
	RefLen = 32
	// RejectLen is the length of one entry of RoundAck.Rejected: region u32 and page u64, little-endian.
	RejectLen = 12
	// MaxResidentBytes bounds Resident.Bits, in bytes: one frame describes at most 8*MaxResidentBytes
	// pages (2,097,152: 8 GiB of 4 KiB pages).
	MaxResidentBytes = 256 << 10
)

// BaseRegion, as a Ref's SrcRegion, names the target's local base snapshot (the pages it advertised in
// Known) instead of a migrated region. It is reserved: no Welcome lists a region with this id, and a
// Refs or a RoundAck entry never names it as the region of a migrated page.
const BaseRegion uint32 = 0xFFFFFFFF

// Feature bits, negotiated in Hello/Welcome as the intersection of both sides' bits.
const (
	// FeatureZeroPages: the server may send zero runs (FlagZero).
	FeatureZeroPages uint64 = 1 << 0
	// FeaturePageHashes is reserved: always set (hashes are mandatory).
	FeaturePageHashes uint64 = 1 << 1
	// FeaturePush: the target accepts pushed pages (Push notices and Pages frames with FlagPushed) on
	// its urgent connection and may send Feedback. A server pushes only when this bit was negotiated.
	FeaturePush uint64 = 1 << 2
	// FeaturePrecopy: the server streams pre-copy rounds on precopy channels. A server sets it in the
	// Welcome of a precopy channel only when it has a pre-copy sender for the session.
	FeaturePrecopy uint64 = 1 << 3
)

// Channels, carried in Hello.Channel.
const (
	ChannelUrgent uint8 = 0
	ChannelBulk   uint8 = 1
	// ChannelPrecopy is one of Hello.Streams pre-copy streams: the server streams rounds to the target.
	ChannelPrecopy uint8 = 2
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
	// FlagPrecopy: the run belongs to pre-copy round ReqID (which may then be 0). It excludes FlagLast and
	// FlagPushed.
	FlagPrecopy uint8 = 1 << 3

	knownFlags = FlagZero | FlagLast | FlagPushed | FlagPrecopy
)

// DigestXXH3Over64 is Digest.Algorithm 1: the xxh3-128 of the concatenation, in page order, of every
// page's xxh3-64 hash as 8 little-endian bytes.
const DigestXXH3Over64 uint8 = 1

// Content hash algorithms, Known.Algorithm: how a target names the content of its base-snapshot pages.
const (
	// ContentXXH3128 is the xxh3-128 of the page, 16 bytes, big-endian (high 64 bits first). For inputs
	// longer than 240 bytes, so for every page, its low 64 bits (the last 8 bytes) are the page's xxh3-64.
	ContentXXH3128 uint8 = 1
	// ContentSHA256 is the SHA-256 of the page, 32 bytes.
	ContentSHA256 uint8 = 2

	maxContentHashLen = 32
)

// ContentHashLen returns the length of one hash of algorithm alg: 16, 32, or 0 for an unknown algorithm.
func ContentHashLen(alg uint8) int {
	switch alg {
	case ContentXXH3128:
		return 16
	case ContentSHA256:
		return 32
	}
	return 0
}

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
	TypeKnown         Type = 11
	TypeRefs          Type = 12
	TypeRoundEnd      Type = 13
	TypeRoundAck      Type = 14
	TypeInvalidate    Type = 15
	TypeHandover      Type = 16
	TypeResident      Type = 17
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
	TypeKnown:         "known",
	TypeRefs:          "refs",
	TypeRoundEnd:      "round_end",
	TypeRoundAck:      "round_ack",
	TypeInvalidate:    "invalidate",
	TypeHandover:      "handover",
	TypeResident:      "resident",
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

	// NumCodes is one more than the highest code defined by version 3, so that an array indexed by
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
// *DigestRequest, *Digest, *Bye, *Push, *Feedback, *Known, *Refs, *RoundEnd, *RoundAck, *Invalidate, *Handover or *Resident.
// The set is closed.
type Message interface {
	// Type returns the message's frame type.
	Type() Type
	// check validates field ranges. pageSize is the negotiated page size, or 0 when unknown.
	check(pageSize int) error
}

// Hello is the first frame on every connection, target to server.
//
// On a precopy channel, Stream numbers the connection among the session's Streams pre-copy
// connections: 1 <= Streams <= MaxStreams and Stream < Streams. On other channels both are 0. A Hello
// body with only the six elements of version 2 decodes with both 0.
//
// Resume marks a connection a target opens again, with the same Session, after its post-copy
// connections to the server were lost (urgent and bulk channels only; absent means false): on the
// urgent connection the target then says what it holds with Resident frames before anything else.
type Hello struct {
	VersionMin, VersionMax uint16
	Features               uint64
	Channel                uint8
	Session                [SessionLen]byte
	Client                 string
	Stream                 uint8
	Streams                uint8
	Resume                 bool
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

// Pages carries one run of pages answering a Request or, with FlagPushed, one run of a Push or, with
// FlagPrecopy, one run of pre-copy round ReqID.
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

// Precopy reports whether the run belongs to a pre-copy round: ReqID is then the round number.
func (p *Pages) Precopy() bool { return p.Flags&FlagPrecopy != 0 }

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

// Known advertises, target to server on precopy stream 0 before the first round, the content hashes of
// the target's local base-snapshot pages First, First+1, ... in order: Len() hashes of
// ContentHashLen(Algorithm) bytes each, at most MaxPagesPerRequest, possibly none. Done marks the final
// Known; a target without a base snapshot sends one empty Known with Done. In a decoded message Hashes
// aliases the frame (or the Reader's buffer).
type Known struct {
	Algorithm uint8
	First     uint64
	Hashes    []byte
	Done      bool
}

// Len returns the number of hashes, 0 for an unknown algorithm.
func (k *Known) Len() int {
	n := ContentHashLen(k.Algorithm)
	if n == 0 {
		return 0
	}
	return len(k.Hashes) / n
}

// Hash returns the hash of page First+i, aliasing Hashes. It panics if i is out of range, like an index.
func (k *Known) Hash(i int) []byte {
	n := ContentHashLen(k.Algorithm)
	return k.Hashes[i*n : (i+1)*n : (i+1)*n]
}

// Refs tells the target, server to target on a precopy stream, pages of Region whose content it already
// holds elsewhere: Entries is Len() entries of RefLen bytes, 1 to MaxPagesPerRequest of them (see Ref).
// In a decoded message Entries aliases the frame (or the Reader's buffer).
type Refs struct {
	Round   uint32
	Region  uint32
	Entries []byte
}

// Ref is one entry of Refs: page Page of the Refs' region has the content of page SrcPage of region
// SrcRegion (BaseRegion: of the target's base snapshot), whose xxh3-64 is Check. On the wire it is 32
// bytes, little-endian: page u64, src_region u32, reserved u32 (0), src_page u64, check u64.
type Ref struct {
	Page      uint64
	SrcRegion uint32
	SrcPage   uint64
	Check     uint64
}

// Len returns the number of entries.
func (r *Refs) Len() int { return len(r.Entries) / RefLen }

// Entry returns the i-th entry. It panics if i is out of range, like an index.
func (r *Refs) Entry(i int) Ref {
	b := r.Entries[i*RefLen : (i+1)*RefLen]
	return Ref{
		Page:      binary.LittleEndian.Uint64(b[0:]),
		SrcRegion: binary.LittleEndian.Uint32(b[8:]),
		SrcPage:   binary.LittleEndian.Uint64(b[16:]),
		Check:     binary.LittleEndian.Uint64(b[24:]),
	}
}

// AppendRef appends e's RefLen-byte wire form to dst, for Refs.Entries.
func AppendRef(dst []byte, e Ref) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, e.Page)
	dst = binary.LittleEndian.AppendUint32(dst, e.SrcRegion)
	dst = binary.LittleEndian.AppendUint32(dst, 0) // reserved
	dst = binary.LittleEndian.AppendUint64(dst, e.SrcPage)
	return binary.LittleEndian.AppendUint64(dst, e.Check)
}

// RoundEnd follows, server to target on every precopy stream, that stream's last frame of a round: it
// carried Pages pages (data and zero, in Pages frames with FlagPrecopy) and Refs ref entries for the
// round, so that the target can tell that nothing was lost.
type RoundEnd struct {
	Round uint32
	Pages uint64
	Refs  uint64
}

// RoundAck acknowledges a round, target to server on precopy stream 0, once every stream's RoundEnd for
// it has arrived and everything is installed. Rejected lists Len() pages, at most MaxRejected, that the
// target did not install (see AppendReject); they are missing on the target again. Last false means
// more RoundAck frames for the same round follow. In a decoded message Rejected aliases the frame (or
// the Reader's buffer).
type RoundAck struct {
	Round    uint32
	Rejected []byte
	Last     bool
}

// Len returns the number of rejected pages.
func (a *RoundAck) Len() int { return len(a.Rejected) / RejectLen }

// Entry returns the i-th rejected page. It panics if i is out of range, like an index.
func (a *RoundAck) Entry(i int) (region uint32, page uint64) {
	b := a.Rejected[i*RejectLen : (i+1)*RejectLen]
	return binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint64(b[4:])
}

// AppendReject appends the RejectLen-byte wire form of a rejected page to dst, for RoundAck.Rejected.
func AppendReject(dst []byte, region uint32, page uint64) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, region)
	return binary.LittleEndian.AppendUint64(dst, page)
}

// Invalidate ends pre-copy at the switch, server to target on precopy stream 0 after the last RoundAck:
// Pages (Len() little-endian u64 page numbers, 1 to MaxInvalidate) of Region were written after the
// last round, so the target's copies are stale; the target makes them missing, and post-copy fetches
// them. A server sends as many Invalidate frames as it needs, then Handover.
type Invalidate struct {
	Region uint32
	Pages  []byte
}

// Len returns the number of pages.
func (v *Invalidate) Len() int { return len(v.Pages) / 8 }

// Page returns the i-th page. It panics if i is out of range, like an index.
func (v *Invalidate) Page(i int) uint64 { return binary.LittleEndian.Uint64(v.Pages[i*8:]) }

// Handover is the last pre-copy frame before Bye, server to target on precopy stream 0: the workload
// stopped on the source, and State (at most MaxHandoverState bytes, opaque to the protocol) is what
// the target needs to resume it. In a decoded message State aliases the frame.
type Handover struct {
	State []byte
}

// Resident tells the server, target to server on a resumed urgent connection (Hello.Resume), which
// pages of Region the target holds: bit i of Bits (least significant bit of each byte first) is set
// when page First+i is resident. Bits holds 1 to MaxResidentBytes bytes; bits past the region's end
// are 0. The covered pages are assigned, not merged: a page whose bit is clear is one the server may
// send again. Done marks the last Resident of the resume. In a decoded message Bits aliases the frame.
type Resident struct {
	Region uint32
	First  uint64
	Bits   []byte
	Done   bool
}

// Pages returns the number of pages the frame covers: 8 per byte of Bits.
func (m *Resident) Pages() uint64 { return 8 * uint64(len(m.Bits)) }

// Has reports whether page First+i is marked resident. It panics if i is out of range, like an index.
func (m *Resident) Has(i uint64) bool { return m.Bits[i/8]&(1<<(i%8)) != 0 }

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
func (*Known) Type() Type         { return TypeKnown }
func (*Refs) Type() Type          { return TypeRefs }
func (*RoundEnd) Type() Type      { return TypeRoundEnd }
func (*RoundAck) Type() Type      { return TypeRoundAck }
func (*Invalidate) Type() Type    { return TypeInvalidate }
func (*Handover) Type() Type      { return TypeHandover }
func (*Resident) Type() Type      { return TypeResident }

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
	switch m.Channel {
	case ChannelUrgent, ChannelBulk:
		if m.Stream != 0 || m.Streams != 0 {
			return malformed("hello: stream %d of %d on channel %d, want 0 of 0", m.Stream, m.Streams, m.Channel)
		}
	case ChannelPrecopy:
		if m.Streams == 0 || m.Streams > MaxStreams || m.Stream >= m.Streams {
			return malformed("hello: precopy stream %d of %d, want 1 <= streams <= %d and stream < streams", m.Stream, m.Streams, MaxStreams)
		}
		if m.Resume {
			return malformed("hello: resume on a precopy channel")
		}
	default:
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
		if m.Regions[i].ID == BaseRegion {
			return malformed("welcome: region id %#x is reserved (BaseRegion)", BaseRegion)
		}
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
	if m.Flags&^knownFlags != 0 {
		return malformed("pages: unknown flags %#x", m.Flags&^knownFlags)
	}
	if m.Flags&FlagPrecopy != 0 {
		if m.Flags&(FlagLast|FlagPushed) != 0 {
			return malformed("pages: flags %#x: precopy with last or pushed", m.Flags)
		}
		if m.ReqID > math.MaxUint32 {
			return malformed("pages: precopy round %d overflows u32", m.ReqID)
		}
	} else if m.ReqID == 0 {
		return malformed("pages: req_id 0 is reserved")
	}
	if m.Count == 0 || m.Count > MaxPagesPerRequest {
		return malformed("pages: count %d not in [1, %d]", m.Count, MaxPagesPerRequest)
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

func (m *Known) check(int) error {
	n := ContentHashLen(m.Algorithm)
	if n == 0 {
		return malformed("known: algorithm %d", m.Algorithm)
	}
	if len(m.Hashes)%n != 0 || len(m.Hashes)/n > MaxPagesPerRequest {
		return malformed("known: hashes are %d bytes, want at most %d hashes of %d bytes", len(m.Hashes), MaxPagesPerRequest, n)
	}
	if k := uint64(len(m.Hashes) / n); k > 0 && m.First > math.MaxUint64-(k-1) {
		return malformed("known: %d pages from %d overflow u64", k, m.First)
	}
	return nil
}

func (m *Refs) check(int) error {
	if m.Region == BaseRegion {
		return malformed("refs: region %#x is reserved (BaseRegion)", BaseRegion)
	}
	if len(m.Entries)%RefLen != 0 || len(m.Entries) == 0 || len(m.Entries) > MaxPagesPerRequest*RefLen {
		return malformed("refs: entries are %d bytes, want 1 to %d entries of %d bytes", len(m.Entries), MaxPagesPerRequest, RefLen)
	}
	for i := 0; i < len(m.Entries); i += RefLen {
		if r := binary.LittleEndian.Uint32(m.Entries[i+12:]); r != 0 {
			return malformed("refs: entry %d: reserved %#x, want 0", i/RefLen, r)
		}
	}
	return nil
}

func (m *RoundEnd) check(int) error { return nil }

func (m *RoundAck) check(int) error {
	if len(m.Rejected)%RejectLen != 0 || len(m.Rejected) > MaxRejected*RejectLen {
		return malformed("round_ack: rejected is %d bytes, want at most %d entries of %d bytes", len(m.Rejected), MaxRejected, RejectLen)
	}
	for i := 0; i < len(m.Rejected); i += RejectLen {
		if binary.LittleEndian.Uint32(m.Rejected[i:]) == BaseRegion {
			return malformed("round_ack: entry %d: region %#x is reserved (BaseRegion)", i/RejectLen, BaseRegion)
		}
	}
	return nil
}

func (m *Invalidate) check(int) error {
	if m.Region == BaseRegion {
		return malformed("invalidate: region %#x is reserved (BaseRegion)", BaseRegion)
	}
	if len(m.Pages)%8 != 0 || len(m.Pages) == 0 || len(m.Pages) > MaxInvalidate*8 {
		return malformed("invalidate: pages are %d bytes, want 1 to %d u64", len(m.Pages), MaxInvalidate)
	}
	return nil
}

func (m *Handover) check(int) error {
	if len(m.State) > MaxHandoverState {
		return malformed("handover: state of %d bytes, limit %d", len(m.State), MaxHandoverState)
	}
	return nil
}

func (m *Resident) check(int) error {
	if m.Region == BaseRegion {
		return malformed("resident: region %#x is reserved (BaseRegion)", BaseRegion)
	}
	if len(m.Bits) == 0 || len(m.Bits) > MaxResidentBytes {
		return malformed("resident: bits are %d bytes, want 1 to %d", len(m.Bits), MaxResidentBytes)
	}
	if m.First > math.MaxUint64-(m.Pages()-1) {
		return malformed("resident: %d pages from %d overflow u64", m.Pages(), m.First)
	}
	return nil
}
