package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// ErrClosed is wrapped by the errors of commands that could not complete because the connection
// ended (Close, QEMU exiting, a protocol error).
var ErrClosed = errors.New("qmp connection closed")

// maxEvents bounds the queue of events nobody waited for yet; the oldest are dropped beyond it.
const maxEvents = 1024

// Client is a QMP connection in command mode.
type Client struct {
	conn net.Conn

	wmu sync.Mutex // serialises writes

	mu       sync.Mutex
	next     uint64
	pending  map[string]chan message
	events   []Event
	evWake   chan struct{} // closed and replaced when an event arrives or the client ends
	closeErr error         // set once when the reader ends
	dropped  int           // replies with an unknown id, events dropped from a full queue

	// Greeting is the "QMP" member of QEMU's greeting (version and capabilities).
	Greeting json.RawMessage

	done chan struct{}
}

// Dial connects to the QMP unix socket at path, reads the greeting and leaves capabilities
// negotiation mode (qmp_capabilities). ctx bounds the whole handshake.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp dial %s: %w", path, err)
	}
	c, err := NewClient(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	return c, nil
}

// NewClient runs the QMP handshake on conn, which the Client then owns.
func NewClient(ctx context.Context, conn net.Conn) (*Client, error) {
	c := &Client{
		conn:    conn,
		pending: make(map[string]chan message),
		evWake:  make(chan struct{}),
		done:    make(chan struct{}),
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	// The greeting is read here, before the reader goroutine starts.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	line, err := readLine(br)
	stopped := stop()
	if err == nil {
		var m message
		if m, err = decode(line); err == nil && m.kind != kindGreeting {
			err = fmt.Errorf("%w: first message is not a greeting", ErrProtocol)
		} else if err == nil {
			c.Greeting = m.greet
		}
	}
	if err != nil || !stopped {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("qmp greeting: %w", ctx.Err())
		}
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	go c.readLoop(br)
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// readLine reads one line of at most MaxLine bytes.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > MaxLine {
			return nil, fmt.Errorf("%w: message longer than %d bytes", ErrProtocol, MaxLine)
		}
		line = append(line, frag...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(line) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return line, err
	}
}

func (c *Client) readLoop(br *bufio.Reader) {
	var err error
	for {
		var line []byte
		if line, err = readLine(br); err != nil {
			break
		}
		var m message
		if m, err = decode(line); err != nil {
			break
		}
		c.mu.Lock()
		switch m.kind {
		case kindReturn, kindError:
			if ch, ok := c.pending[m.id]; ok && m.hasID {
				delete(c.pending, m.id)
				ch <- m // buffered, one reply per command
			} else {
				c.dropped++
			}
		case kindEvent:
			if len(c.events) == maxEvents {
				c.events = c.events[1:]
				c.dropped++
			}
			c.events = append(c.events, m.event)
			close(c.evWake)
			c.evWake = make(chan struct{})
		case kindGreeting:
			c.dropped++
		}
		c.mu.Unlock()
	}
	c.conn.Close()
	c.mu.Lock()
	c.closeErr = fmt.Errorf("%w: %w", ErrClosed, err)
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	close(c.evWake)
	c.mu.Unlock()
	close(c.done)
}

// Close closes the connection and waits for the reader to end.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Execute runs command with args (nil for none; anything encoding/json encodes to an object) and
// decodes the reply's "return" into result (nil to ignore it). A QMP error reply is returned as
// *Error. If ctx ends first, Execute returns ctx's error; the reply, when it comes, is dropped.
func (c *Client) Execute(ctx context.Context, command string, args, result any) error {
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{Execute: command, Arguments: args}
	ch := make(chan message, 1)
	c.mu.Lock()
	if c.closeErr != nil {
		err := c.closeErr
		c.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	c.next++
	req.ID = "pw-" + strconv.FormatUint(c.next, 10)
	c.pending[req.ID] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, req.ID)
		c.mu.Unlock()
	}
	b, err := json.Marshal(req)
	if err != nil {
		forget()
		return fmt.Errorf("qmp %s: encode arguments: %w", command, err)
	}
	b = append(b, '\n')
	c.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	} else {
		c.conn.SetWriteDeadline(time.Time{})
	}
	_, err = c.conn.Write(b)
	c.wmu.Unlock()
	if err != nil {
		forget()
		return fmt.Errorf("qmp %s: write: %w", command, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			c.mu.Lock()
			err := c.closeErr
			c.mu.Unlock()
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		if m.kind == kindError {
			return fmt.Errorf("qmp %s: %w", command, m.err)
		}
		if result != nil {
			if err := json.Unmarshal(m.ret, result); err != nil {
				return fmt.Errorf("qmp %s: decode reply: %w", command, err)
			}
		}
		return nil
	case <-ctx.Done():
		forget()
		return fmt.Errorf("qmp %s: %w", command, ctx.Err())
	}
}

// Events returns the queued events nobody took yet (oldest first) and empties the queue.
func (c *Client) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	ev := c.events
	c.events = nil
	return ev
}

// WaitEvent returns the oldest queued event called name, removing it (and only it) from the
// queue, waiting for one until ctx ends or the connection closes.
func (c *Client) WaitEvent(ctx context.Context, name string) (Event, error) {
	for {
		c.mu.Lock()
		for i, e := range c.events {
			if e.Name == name {
				c.events = append(c.events[:i:i], c.events[i+1:]...)
				c.mu.Unlock()
				return e, nil
			}
		}
		wake, closed := c.evWake, c.closeErr
		c.mu.Unlock()
		if closed != nil {
			return Event{}, fmt.Errorf("qmp wait for event %s: %w", name, closed)
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return Event{}, fmt.Errorf("qmp wait for event %s: %w", name, ctx.Err())
		}
	}
}

// Dropped returns how many messages were dropped: replies with an unknown id, events pushed
// out of a full queue, repeated greetings.
func (c *Client) Dropped() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}
