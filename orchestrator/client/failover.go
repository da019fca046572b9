package client

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// outcome is what one attempt on one node says about trying the next node.
type outcome int

const (
	// answered: the node answered (or the request cannot be made); its result is the call's.
	answered outcome = iota
	// unsent: the connection failed before the request was sent (refused, no route, dial
	// timeout); no node can have seen it, so any request may go to the next node.
	unsent
	// refused: the node answered 503, it cannot serve now; another node may.
	refused
	// lost: the connection broke after the request was sent, before the whole answer came;
	// the request may have been applied. Only requests that are safe to repeat go on.
	lost
)

// Backoff between two rounds over every node: it starts at backoffMin and doubles up to
// backoffMax.
const (
	backoffMin = 50 * time.Millisecond
	backoffMax = time.Second
)

// failover runs try on the nodes in turn, from the one that answered last, until one
// answers, the attempt's outcome forbids another (lost, unless resend), or ctx ends; it
// returns the last attempt's error. Between two rounds over every node it backs off. The node
// that answers is the first the next calls try.
func (c *Client) failover(ctx context.Context, resend bool, try func(base string) (outcome, error)) error {
	urls := c.URLs
	if len(urls) == 0 {
		urls = []string{""}
	}
	n := uint64(len(urls))
	start := c.next.Load() % n
	wait := backoffMin
	for i := uint64(0); ; i++ {
		idx := (start + i) % n
		out, err := try(urls[idx])
		if out == answered {
			if idx != start {
				c.next.Store(idx)
			}
			return err
		}
		if out == lost && !resend {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		if (i+1)%n == 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
			wait = min(2*wait, backoffMax)
		}
	}
}

// bound gives ctx the client's Timeout if it has no deadline of its own.
func (c *Client) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.Timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.Timeout)
}

// failureOf sorts an error of http.Client.Do: unsent if the connection failed before the
// request went out, lost if it broke after, answered (no other node will do better) for
// anything else, such as a malformed URL.
func failureOf(err error) outcome {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" || errors.Is(err, syscall.ECONNREFUSED) {
		return unsent
	}
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		err = ue.Err // a *url.Error is a net.Error whatever it wraps
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "server closed idle connection") { // net/http's errServerClosedIdle
		return lost
	}
	return answered
}
