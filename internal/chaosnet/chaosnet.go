// Package chaosnet is a TCP forwarder that injects faults into the
// connections it carries: it cuts one at a given point, stalls it, delays
// it, or flips a bit of its byte stream. The chaos suite puts it between a
// migration's target and source.
//
// Connections are numbered in the order they are accepted (0, 1, ...); a
// Fault names the connection it applies to and the direction (the bytes
// the dialing side sends, Up, or receives, Down). Each fault fires at most
// once. Connections no fault names are forwarded unchanged, and so are the
// connections a target opens again after a cut (they get new numbers).
package chaosnet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Direction is the side of a connection a fault applies to.
type Direction int

const (
	Up   Direction = iota // from the dialing side (the target) to the upstream (the source)
	Down                  // from the upstream to the dialing side
)

func (d Direction) String() string {
	if d == Up {
		return "up"
	}
	return "down"
}

// Kind is what a Fault does.
type Kind int

const (
	// Cut closes both directions of the connection (a reset, as a
	// dropped link or a dead peer looks) once At bytes have passed in Dir,
	// or After has elapsed since the connection opened, whichever is set.
	Cut Kind = iota
	// Stall stops forwarding in Dir for For, then resumes (a link that
	// hangs: bytes are delayed, not lost).
	Stall
	// Delay holds every chunk in Dir for For before forwarding it, from
	// byte At on, or from the start without At (a slow path: with several
	// connections, their bytes arrive in another order than they were
	// sent).
	Delay
	// Corrupt flips bit Bit of the At-th byte in Dir.
	Corrupt
)

func (k Kind) String() string {
	switch k {
	case Cut:
		return "cut"
	case Stall:
		return "stall"
	case Delay:
		return "delay"
	case Corrupt:
		return "corrupt"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Fault is one fault on one connection.
type Fault struct {
	Kind Kind
	Conn int // connection number
	Dir  Direction
	// The trigger: when At > 0, the At-th byte in Dir (counting from 1);
	// otherwise After since the connection was accepted (0: at once).
	At    int64
	After time.Duration
	For   time.Duration // Stall, Delay
	Bit   uint          // Corrupt: 0..7
}

func (f Fault) String() string {
	trig := fmt.Sprintf("after %v", f.After)
	if f.At > 0 {
		trig = fmt.Sprintf("at byte %d", f.At)
	}
	s := fmt.Sprintf("%s conn %d %s %s", f.Kind, f.Conn, f.Dir, trig)
	switch f.Kind {
	case Stall, Delay:
		s += fmt.Sprintf(" for %v", f.For)
	case Corrupt:
		s += fmt.Sprintf(" bit %d", f.Bit)
	}
	return s
}

// Proxy forwards connections from its listener to an upstream address,
// injecting its faults.
type Proxy struct {
	ln       net.Listener
	upstream string
	faults   []Fault

	next   atomic.Int64 // connection numbers
	fired  atomic.Int64 // faults that fired
	mu     sync.Mutex
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
	log    func(string)
}

// Listen starts a Proxy on addr (e.g. "127.0.0.1:0") forwarding to
// upstream. log, if not nil, receives one line per fault that fires.
func Listen(addr, upstream string, faults []Fault, log func(string)) (*Proxy, error) {
	for _, f := range faults {
		if f.Kind == Corrupt && (f.At <= 0 || f.Bit > 7) {
			return nil, fmt.Errorf("chaosnet: %v: a corruption needs a byte (At > 0) and a bit 0..7", f)
		}
		if (f.Kind == Stall || f.Kind == Delay) && f.For <= 0 {
			return nil, fmt.Errorf("chaosnet: %v: needs a duration", f)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = func(string) {}
	}
	p := &Proxy{ln: ln, upstream: upstream, faults: faults, log: log}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is where the dialing side connects.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Fired returns how many faults have fired so far.
func (p *Proxy) Fired() int { return int(p.fired.Load()) }

// Conns returns how many connections were accepted so far.
func (p *Proxy) Conns() int { return int(p.next.Load()) }

// Close stops accepting, closes every connection and waits for the
// forwarders.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		n := int(p.next.Add(1) - 1)
		up, err := net.DialTimeout("tcp", p.upstream, 10*time.Second)
		if err != nil {
			down.Close()
			continue
		}
		if !p.track(down) || !p.track(up) {
			down.Close()
			up.Close()
			return
		}
		var mine []Fault
		for _, f := range p.faults {
			if f.Conn == n {
				mine = append(mine, f)
			}
		}
		c := &conn{p: p, n: n, down: down, up: up, start: time.Now()}
		p.wg.Add(2)
		go c.pump(Up, down, up, mine)
		go c.pump(Down, up, down, mine)
	}
}

// conn is one forwarded connection.
type conn struct {
	p        *Proxy
	n        int
	down, up net.Conn
	start    time.Time
	once     sync.Once
}

// cut resets both sides: SO_LINGER 0 makes the close an RST where the
// platform allows, as a dead peer or a dropped link looks.
func (c *conn) cut() {
	c.once.Do(func() {
		for _, x := range []net.Conn{c.down, c.up} {
			if tc, ok := x.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			x.Close()
		}
	})
}

// errCut ends a pump after its connection was cut.
var errCut = errors.New("cut")

// pump forwards src to dst in direction d, applying faults.
func (c *conn) pump(d Direction, src, dst net.Conn, faults []Fault) {
	defer c.p.wg.Done()
	var pending []Fault
	for _, f := range faults {
		if f.Dir == d {
			pending = append(pending, f)
		}
	}
	var off int64 // bytes forwarded in d so far
	var delay time.Duration
	buf := make([]byte, 64<<10)
	fire := func(f Fault) {
		c.p.fired.Add(1)
		c.p.log(f.String())
	}
	// Cuts and stalls without a byte trigger run on their own clock.
	var timers []*time.Timer
	stallUntil := atomic.Int64{}
	for i := 0; i < len(pending); i++ {
		f := pending[i]
		if f.At > 0 {
			continue
		}
		switch f.Kind {
		case Cut:
			timers = append(timers, time.AfterFunc(max(0, f.After-time.Since(c.start)), func() { fire(f); c.cut() }))
		case Stall:
			timers = append(timers, time.AfterFunc(max(0, f.After-time.Since(c.start)), func() {
				fire(f)
				stallUntil.Store(time.Now().Add(f.For).UnixNano())
			}))
		case Delay:
			// A delay without a byte trigger holds the connection's bytes from
			// its start.
			fire(f)
			delay = f.For
		}
		pending = append(pending[:i], pending[i+1:]...)
		i--
	}
	defer func() {
		for _, t := range timers {
			t.Stop()
		}
	}()
	for {
		n, err := src.Read(buf)
		chunk := buf[:n]
		for len(chunk) > 0 {
			// Byte-triggered faults inside this chunk, in order.
			next := -1
			for i, f := range pending {
				if f.At > off && f.At <= off+int64(len(chunk)) && (next < 0 || f.At < pending[next].At) {
					next = i
				}
			}
			upto := len(chunk)
			if next >= 0 {
				upto = int(pending[next].At - off - 1) // bytes before the fault's byte
			}
			if err := c.write(dst, chunk[:upto], delay, &stallUntil); err != nil {
				c.cut()
				return
			}
			off += int64(upto)
			chunk = chunk[upto:]
			if next < 0 {
				break
			}
			f := pending[next]
			pending = append(pending[:next], pending[next+1:]...)
			fire(f)
			switch f.Kind {
			case Cut:
				c.cut()
				return
			case Corrupt:
				chunk[0] ^= 1 << f.Bit
			case Stall:
				stallUntil.Store(time.Now().Add(f.For).UnixNano())
			case Delay:
				delay = f.For
			}
		}
		if err != nil {
			if err == io.EOF {
				// Pass the half-close on; the other pump ends the connection.
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
					return
				}
			}
			c.cut()
			return
		}
	}
}

// write forwards b after the current delay and any stall.
func (c *conn) write(dst net.Conn, b []byte, delay time.Duration, stallUntil *atomic.Int64) error {
	if len(b) == 0 {
		return nil
	}
	if d := time.Until(time.Unix(0, stallUntil.Load())); d > 0 {
		time.Sleep(d)
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	_, err := dst.Write(b)
	return err
}
