// Package zkcoord implements coord.Coordinator with ZooKeeper.
//
// Layout under Root (default /rideshare):
//
//	<root>/members/<id>  ephemeral, the member as JSON
//	<root>/master        ephemeral, the ID holding the master lock
//	<root>/designated    persistent, the ID designated to become master next
//
// A ZK is one ZooKeeper session. While the connection is down the client reconnects and the
// session (with its ephemeral nodes) survives; once the server has expired it, or the client has
// not reached a server for LostAfter (default: the session timeout the server granted), Lost is
// closed, the connection is closed and every method returns coord.ErrSessionLost. A process
// that wants to go on opens a new ZK. Close is idempotent; Watch channels close with the session.
package zkcoord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/rideshare/rideshare/broker/coord"
)

// Defaults.
const (
	DefaultRoot           = "/rideshare"
	DefaultSessionTimeout = 4 * time.Second
)

// ErrNotJoined is returned by Update for a member this session did not join.
var ErrNotJoined = errors.New("member not joined by this session")

var _ coord.Coordinator = (*ZK)(nil)

var acl = zk.WorldACL(zk.PermAll)

// ZK is a session with ZooKeeper. Set the fields before Open.
type ZK struct {
	// Servers are host:port addresses of the ensemble.
	Servers []string
	// Root is the znode under which everything lives; default DefaultRoot.
	Root string
	// SessionTimeout is asked of the server, which bounds it to [2, 20] × its tickTime. A
	// member of a dead process vanishes that long after its last contact.
	SessionTimeout time.Duration
	// LostAfter is how long the client may be without a connection before it gives the
	// session up (Lost). Default: the session timeout the server granted, after which the
	// server has expired the session. A shorter value makes Lost fire before the server can
	// hand the lock to another session, at the cost of losing sessions over short outages.
	LostAfter time.Duration
	// Logger receives the session's events (and, at debug level, the ZooKeeper client's
	// log); default slog.Default().
	Logger *slog.Logger

	// Test hooks: the dialer, and a function told every session state.
	dialer    zk.Dialer
	stateHook func(zk.State)

	granted atomic.Int64 // session timeout granted by the server, in ns; 0 until known

	initOnce   sync.Once
	lost       chan struct{} // closed when the session has ended
	hasSession chan struct{} // closed when the first session is established
	connDone   chan struct{} // closed when the client's connection loop has ended

	mu         sync.Mutex
	conn       *zk.Conn
	sid        int64 // the session's ID, set by Open
	hadSession bool
	lostTimer  *time.Timer
	timerGen   int
	isLost     bool
	closing    bool
	lostReason string

	log     *slog.Logger
	watches sync.WaitGroup
}

// New returns a ZK for servers and root ("" means DefaultRoot) with default settings.
func New(servers []string, root string) *ZK {
	return &ZK{Servers: servers, Root: root, SessionTimeout: DefaultSessionTimeout}
}

func (z *ZK) init() {
	z.lost = make(chan struct{})
	z.hasSession = make(chan struct{})
	z.connDone = make(chan struct{})
}

// Open connects, waits for a session (bounded by ctx) and creates the root and members nodes.
func (z *ZK) Open(ctx context.Context) error {
	z.initOnce.Do(z.init)
	if z.Root == "" {
		z.Root = DefaultRoot
	}
	if !strings.HasPrefix(z.Root, "/") || path.Clean(z.Root) != z.Root || z.Root == "/" {
		return fmt.Errorf("zkcoord: invalid root %q: want an absolute znode path such as %s", z.Root, DefaultRoot)
	}
	if z.SessionTimeout <= 0 {
		z.SessionTimeout = DefaultSessionTimeout
	}
	if len(z.Servers) == 0 {
		return errors.New("zkcoord: no ZooKeeper servers")
	}
	logger := z.Logger
	if logger == nil {
		logger = slog.Default()
	}
	z.log = logger.With("component", "zkcoord", "root", z.Root)
	zkLog := zkLogger{l: logger.With("component", "zk", "root", z.Root), granted: &z.granted}

	z.mu.Lock()
	if z.conn != nil || z.closing {
		z.mu.Unlock()
		return errors.New("zkcoord: Open called twice or after Close")
	}
	z.mu.Unlock()

	dialer := z.dialer
	if dialer == nil {
		dialer = net.DialTimeout
	}
	conn, events, err := zk.Connect(z.Servers, z.SessionTimeout,
		zk.WithLogger(zkLog),
		zk.WithEventCallback(z.onEvent),
		zk.WithDialer(dialer))
	if err != nil {
		return fmt.Errorf("zkcoord: connect to %v: %w", z.Servers, err)
	}
	go func() {
		for range events { // the callback sees every event; this only waits for the end
		}
		close(z.connDone)
	}()
	z.mu.Lock()
	z.conn = conn
	z.mu.Unlock()

	select {
	case <-z.hasSession:
	case <-ctx.Done():
		z.abandon()
		return fmt.Errorf("zkcoord: connect to %v: no session: %w", z.Servers, ctx.Err())
	}
	z.mu.Lock()
	z.sid = conn.SessionID()
	z.mu.Unlock()

	for _, p := range []string{z.Root, z.membersPath()} {
		if err := ensurePath(conn, p); err != nil {
			z.abandon()
			return fmt.Errorf("zkcoord: create %s: %w", p, err)
		}
	}
	z.log.Info("session open", "servers", z.Servers, "session", fmt.Sprintf("%#x", z.sid),
		"timeout", z.SessionTimeout, "granted", time.Duration(z.granted.Load()))
	return nil
}

// abandon closes the connection of an Open that failed.
func (z *ZK) abandon() {
	z.mu.Lock()
	conn := z.conn
	z.closing = true
	z.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// onEvent follows the session's state. zk calls it synchronously: it must not block.
func (z *ZK) onEvent(ev zk.Event) {
	if ev.Type != zk.EventSession {
		return
	}
	if z.stateHook != nil {
		z.stateHook(ev.State)
	}
	z.mu.Lock()
	if z.isLost || z.closing {
		z.mu.Unlock()
		return
	}
	switch ev.State {
	case zk.StateHasSession:
		if z.lostTimer != nil {
			z.stopLostTimer()
			z.log.Info("session re-established", "server", ev.Server)
		}
		if !z.hadSession {
			z.hadSession = true
			close(z.hasSession)
		}
	case zk.StateDisconnected, zk.StateConnecting:
		if z.hadSession && z.lostTimer == nil {
			after := z.lostAfterDuration()
			z.log.Warn("connection lost; reconnecting", "server", ev.Server, "give_up_after", after)
			z.timerGen++
			gen := z.timerGen
			z.lostTimer = time.AfterFunc(after, func() {
				z.mu.Lock()
				current := z.timerGen == gen
				z.mu.Unlock()
				if current {
					z.loseSession(fmt.Sprintf("no connection to ZooKeeper for %v", after))
				}
			})
		}
	case zk.StateExpired:
		z.mu.Unlock()
		z.loseSession("session expired by the server")
		return
	}
	z.mu.Unlock()
}

// Granted is the session timeout the server granted (it clamps the one asked for to
// [2, 20] × its tickTime), or 0 until known. A holder of a lock counts with the shorter of the
// two (orchestrator.GrantedTimeout).
func (z *ZK) Granted() time.Duration { return time.Duration(z.granted.Load()) }

// lostAfterDuration is LostAfter, or the granted session timeout, or the requested one.
func (z *ZK) lostAfterDuration() time.Duration {
	if z.LostAfter > 0 {
		return z.LostAfter
	}
	if g := time.Duration(z.granted.Load()); g > 0 {
		return g
	}
	return z.SessionTimeout
}

// stopLostTimer is called with z.mu held.
func (z *ZK) stopLostTimer() {
	if z.lostTimer != nil {
		z.lostTimer.Stop()
		z.lostTimer = nil
		z.timerGen++
	}
}

// loseSession ends the session: Lost is closed and the connection is closed, so that the client
// does not go on with a new session.
func (z *ZK) loseSession(reason string) {
	z.mu.Lock()
	if z.isLost {
		z.mu.Unlock()
		return
	}
	z.isLost = true
	z.lostReason = reason
	z.stopLostTimer()
	closing, conn := z.closing, z.conn
	close(z.lost)
	z.mu.Unlock()
	if closing {
		return
	}
	z.log.Warn("session lost", "reason", reason)
	if conn != nil {
		go conn.Close()
	}
}

// Lost is closed when the session has ended: expired, unreachable for SessionTimeout, or
// closed.
func (z *ZK) Lost() <-chan struct{} {
	z.initOnce.Do(z.init)
	return z.lost
}

// Close ends the session: the server removes its members and lock at once. Close is
// idempotent.
func (z *ZK) Close() error {
	z.initOnce.Do(z.init)
	z.mu.Lock()
	already := z.closing
	z.closing = true
	conn := z.conn
	z.mu.Unlock()
	z.loseSession("closed")
	if conn != nil {
		conn.Close() // once only: the client ignores later calls
		select {
		case <-z.connDone:
		case <-time.After(5 * time.Second):
			z.log.Warn("ZooKeeper client did not stop within 5s")
		}
		if !already {
			z.log.Info("session closed")
		}
	}
	z.watches.Wait()
	return nil
}

// begin returns the connection for an operation, or why there is none.
func (z *ZK) begin(ctx context.Context) (*zk.Conn, error) {
	z.initOnce.Do(z.init)
	z.mu.Lock()
	conn, lost, reason := z.conn, z.isLost, z.lostReason
	z.mu.Unlock()
	if lost {
		return nil, fmt.Errorf("%w: %s", coord.ErrSessionLost, reason)
	}
	if conn == nil {
		return nil, errors.New("not open")
	}
	return conn, ctx.Err()
}

// do runs f on the session's connection and maps its error. ZooKeeper calls take no context:
// ctx is checked before; the client bounds each call by its own timeouts.
func (z *ZK) do(ctx context.Context, op string, f func(conn *zk.Conn) error) error {
	conn, err := z.begin(ctx)
	if err != nil {
		return fmt.Errorf("zkcoord: %s: %w", op, err)
	}
	err = f(conn)
	if sid := conn.SessionID(); sid != z.sid {
		// The client replaced an expired session: what f did is not ours.
		z.loseSession("session replaced by the client")
		return fmt.Errorf("zkcoord: %s: %w", op, coord.ErrSessionLost)
	}
	if err == nil {
		return nil
	}
	select {
	case <-z.lost:
		return fmt.Errorf("zkcoord: %s: %w (%v)", op, coord.ErrSessionLost, err)
	default:
	}
	if errors.Is(err, zk.ErrSessionExpired) || errors.Is(err, zk.ErrClosing) {
		return fmt.Errorf("zkcoord: %s: %w (%v)", op, coord.ErrSessionLost, err)
	}
	return fmt.Errorf("zkcoord: %s: %w", op, err)
}

func (z *ZK) membersPath() string         { return z.Root + "/members" }
func (z *ZK) memberPath(id string) string { return z.Root + "/members/" + id }
func (z *ZK) masterPath() string          { return z.Root + "/master" }
func (z *ZK) designatedPath() string      { return z.Root + "/designated" }

func validID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return fmt.Errorf("invalid member id %q", id)
	}
	return nil
}

// Join registers m as an ephemeral member of this session. An entry with the same ID, of this
// session or of an older one not yet expired, is replaced.
func (z *ZK) Join(ctx context.Context, m coord.Member) error {
	op := "join " + m.ID
	if err := validID(m.ID); err != nil {
		return fmt.Errorf("zkcoord: %s: %w", op, err)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("zkcoord: %s: %w", op, err)
	}
	p := z.memberPath(m.ID)
	return z.do(ctx, op, func(conn *zk.Conn) error {
		for range 10 {
			_, err := conn.Create(p, data, zk.FlagEphemeral, acl)
			if !errors.Is(err, zk.ErrNodeExists) {
				return err
			}
			ok, st, err := conn.Exists(p)
			switch {
			case err != nil:
				return err
			case !ok:
				continue
			case st.EphemeralOwner == z.sid:
				_, err = conn.Set(p, data, st.Version)
				if errors.Is(err, zk.ErrBadVersion) {
					continue
				}
				return err
			}
			z.log.Info("replacing a member entry of another session", "id", m.ID,
				"owner", fmt.Sprintf("%#x", st.EphemeralOwner))
			err = conn.Delete(p, st.Version)
			if err != nil && !errors.Is(err, zk.ErrNoNode) && !errors.Is(err, zk.ErrBadVersion) {
				return err
			}
		}
		return errors.New("the entry keeps changing")
	})
}

// Update replaces the data of a member this session joined.
func (z *ZK) Update(ctx context.Context, m coord.Member) error {
	op := "update " + m.ID
	if err := validID(m.ID); err != nil {
		return fmt.Errorf("zkcoord: %s: %w", op, err)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("zkcoord: %s: %w", op, err)
	}
	p := z.memberPath(m.ID)
	return z.do(ctx, op, func(conn *zk.Conn) error {
		ok, st, err := conn.Exists(p)
		if err != nil {
			return err
		}
		if !ok || st.EphemeralOwner != z.sid {
			return ErrNotJoined
		}
		_, err = conn.Set(p, data, st.Version)
		if errors.Is(err, zk.ErrNoNode) || errors.Is(err, zk.ErrBadVersion) {
			return ErrNotJoined // removed or replaced meanwhile
		}
		return err
	})
}

// Members lists the live members. An entry that cannot be decoded is logged and skipped.
func (z *ZK) Members(ctx context.Context) ([]coord.Member, error) {
	var out []coord.Member
	err := z.do(ctx, "list members", func(conn *zk.Conn) error {
		names, _, err := conn.Children(z.membersPath())
		if err != nil {
			return err
		}
		out = make([]coord.Member, 0, len(names))
		for _, name := range names {
			data, _, err := conn.Get(z.memberPath(name))
			if errors.Is(err, zk.ErrNoNode) {
				continue // left meanwhile
			}
			if err != nil {
				return err
			}
			var m coord.Member
			if err := json.Unmarshal(data, &m); err != nil {
				z.log.Warn("skipping undecodable member entry", "id", name, "err", err)
				continue
			}
			m.ID = name
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

// Designate names the worker that should become master next (persistent).
func (z *ZK) Designate(ctx context.Context, id string) error {
	p := z.designatedPath()
	return z.do(ctx, "designate "+id, func(conn *zk.Conn) error {
		for range 10 {
			_, err := conn.Set(p, []byte(id), -1)
			if !errors.Is(err, zk.ErrNoNode) {
				return err
			}
			_, err = conn.Create(p, []byte(id), zk.FlagPersistent, acl)
			if !errors.Is(err, zk.ErrNodeExists) {
				return err
			}
		}
		return errors.New("the designation keeps changing")
	})
}

// Designated returns the designated worker's ID, or "".
func (z *ZK) Designated(ctx context.Context) (string, error) {
	return z.get(ctx, "read designation", z.designatedPath())
}

// AcquireMaster takes the master lock (an ephemeral node) for id.
func (z *ZK) AcquireMaster(ctx context.Context, id string) error {
	op := "acquire master for " + id
	if err := validID(id); err != nil {
		return fmt.Errorf("zkcoord: %s: %w", op, err)
	}
	p := z.masterPath()
	return z.do(ctx, op, func(conn *zk.Conn) error {
		for range 10 {
			_, err := conn.Create(p, []byte(id), zk.FlagEphemeral, acl)
			if !errors.Is(err, zk.ErrNodeExists) {
				return err
			}
			data, st, err := conn.Get(p)
			if errors.Is(err, zk.ErrNoNode) {
				continue // released meanwhile
			}
			if err != nil {
				return err
			}
			if st.EphemeralOwner == z.sid && string(data) == id {
				return nil
			}
			return fmt.Errorf("held by %q: %w", data, coord.ErrHeld)
		}
		return errors.New("the lock keeps changing")
	})
}

// Master returns the ID holding the master lock, or "".
func (z *ZK) Master(ctx context.Context) (string, error) {
	return z.get(ctx, "read master", z.masterPath())
}

// Revoke deletes the master lock node if it names id (version-checked, so a lock taken by
// someone else meanwhile is left alone).
func (z *ZK) Revoke(ctx context.Context, id string) error {
	return z.do(ctx, "revoke master", func(conn *zk.Conn) error {
		data, stat, err := conn.Get(z.masterPath())
		if errors.Is(err, zk.ErrNoNode) || (err == nil && string(data) != id) {
			return nil
		}
		if err != nil {
			return err
		}
		err = conn.Delete(z.masterPath(), stat.Version)
		if errors.Is(err, zk.ErrNoNode) || errors.Is(err, zk.ErrBadVersion) {
			return nil
		}
		return err
	})
}

func (z *ZK) get(ctx context.Context, op, p string) (string, error) {
	var s string
	err := z.do(ctx, op, func(conn *zk.Conn) error {
		data, _, err := conn.Get(p)
		if errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		s = string(data)
		return err
	})
	return s, err
}

// Watch reports changes of the members (joins, leaves, updates), the master lock and the
// designation. The watches are set when Watch returns. The channel is closed when ctx ends or
// the session ends.
func (z *ZK) Watch(ctx context.Context) (<-chan struct{}, error) {
	w := &watcher{z: z, out: make(chan struct{}, 1), names: map[string]bool{}, members: map[string]<-chan zk.Event{}}
	err := z.do(ctx, "watch", w.arm)
	if err != nil {
		return nil, err
	}
	z.watches.Add(1)
	go w.run(ctx)
	return w.out, nil
}

// watcher keeps one ZooKeeper watch armed on each path of interest and re-arms a watch once it
// has fired (ZooKeeper watches fire once).
type watcher struct {
	z   *ZK
	out chan struct{}

	children   <-chan zk.Event            // members' children
	master     <-chan zk.Event            // exists/data watch on master
	designated <-chan zk.Event            // exists/data watch on designated
	names      map[string]bool            // members seen by the last children listing
	members    map[string]<-chan zk.Event // data watch per member in names
}

// arm sets every watch that is not set.
func (w *watcher) arm(conn *zk.Conn) error {
	z := w.z
	if w.children == nil {
		names, _, ch, err := conn.ChildrenW(z.membersPath())
		if err != nil {
			return err
		}
		w.names = make(map[string]bool, len(names))
		for _, n := range names {
			w.names[n] = true
		}
		for n := range w.members {
			if !w.names[n] {
				delete(w.members, n) // its watch fires when it is deleted; it is forgotten
			}
		}
		// Set last: if a member's watch fails below, the listing is redone.
		defer func() {
			if len(w.members) == len(w.names) {
				w.children = ch
			}
		}()
	}
	for n := range w.names {
		if w.members[n] != nil {
			continue
		}
		_, _, ch, err := conn.GetW(z.memberPath(n))
		if errors.Is(err, zk.ErrNoNode) {
			delete(w.names, n) // left; the children watch reports it
			continue
		}
		if err != nil {
			return err
		}
		w.members[n] = ch
	}
	for _, s := range []struct {
		ch *<-chan zk.Event
		p  string
	}{{&w.master, z.masterPath()}, {&w.designated, z.designatedPath()}} {
		if *s.ch != nil {
			continue
		}
		_, _, ch, err := conn.ExistsW(s.p)
		if err != nil {
			return err
		}
		*s.ch = ch
	}
	return nil
}

func (w *watcher) notify() {
	select {
	case w.out <- struct{}{}:
	default:
	}
}

func (w *watcher) run(ctx context.Context) {
	z := w.z
	defer z.watches.Done()
	defer close(w.out)
	const minBackoff, maxBackoff = 100 * time.Millisecond, 2 * time.Second
	backoff := minBackoff
	for {
		if err := z.do(ctx, "watch", w.arm); err != nil {
			if errors.Is(err, coord.ErrSessionLost) || ctx.Err() != nil {
				return
			}
			z.log.Warn("setting watches; retrying", "err", err, "in", backoff)
			w.notify() // something may have changed unseen
			select {
			case <-ctx.Done():
				return
			case <-z.lost:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff

		cases := []reflect.SelectCase{
			{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
			{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(z.lost)},
			{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w.children)},
			{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w.master)},
			{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w.designated)},
		}
		names := make([]string, 0, len(w.members))
		for n, ch := range w.members {
			names = append(names, n)
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
		}
		i, v, ok := reflect.Select(cases)
		if i < 2 {
			return
		}
		var ev zk.Event
		if ok {
			ev, _ = v.Interface().(zk.Event)
		}
		if !ok || ev.Type == zk.EventNotWatching {
			return // the client is closing or the session expired: Lost follows
		}
		switch i {
		case 2:
			w.children = nil
		case 3:
			w.master = nil
		case 4:
			w.designated = nil
		default:
			n := names[i-5]
			delete(w.members, n)
			if ev.Type == zk.EventNodeDeleted {
				delete(w.names, n)
			}
		}
		w.notify()
	}
}

// ensurePath creates p and its parents as persistent nodes.
func ensurePath(conn *zk.Conn, p string) error {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	cur := ""
	for _, part := range parts {
		cur += "/" + part
		_, err := conn.Create(cur, nil, zk.FlagPersistent, acl)
		if err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return err
		}
	}
	return nil
}

// zkLogger routes the ZooKeeper client's log to slog: failures as warnings, the rest (connects,
// loop ends, credentials) at debug level since zkcoord logs the session's events itself. It also
// picks up the session timeout the server granted, which the client does not export.
type zkLogger struct {
	l       *slog.Logger
	granted *atomic.Int64
}

const authenticatedFormat = "authenticated: id=%d, timeout=%d"

func (z zkLogger) Printf(format string, args ...any) {
	if format == authenticatedFormat && len(args) == 2 && z.granted != nil {
		if ms, ok := args[1].(int32); ok && ms > 0 {
			z.granted.Store(int64(time.Duration(ms) * time.Millisecond))
		}
	}
	msg := fmt.Sprintf(format, args...)
	level := slog.LevelDebug
	if strings.Contains(msg, "fail") || strings.Contains(msg, "error") || strings.Contains(msg, "gave up") {
		level = slog.LevelWarn
	}
	z.l.Log(context.Background(), level, msg)
}
