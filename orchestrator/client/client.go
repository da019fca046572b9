// Package client calls the orchestrator's database API (POST /api/v1/db/write, /db/read,
// /db/clear) over HTTP. It is what the users and rides services use as their database.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rideshare/rideshare"
)

// Client talks to the orchestrator: one node, or any node of a cluster (every node serves
// the database API). A call goes to the node that answered the last call and moves on to the
// next one, round robin, on a refused connection or a 503 (see failover).
type Client struct {
	// URLs are the orchestrator nodes' base URLs, e.g. http://127.0.0.1:8083, without a
	// trailing slash. Set them before the first call.
	URLs []string
	// Token, if set, is sent as "Authorization: Bearer <token>".
	Token string
	// Timeout bounds one call, its failover over the nodes included, when the call's context
	// has no deadline of its own (a context's deadline alone bounds its call). 0: none.
	Timeout time.Duration
	// HTTP sends the requests. Its own Timeout bounds one attempt on one node.
	HTTP *http.Client
	// AttemptTimeout, if set, bounds one attempt on one node more tightly than HTTP's
	// Timeout: a node that takes the connection and never answers (its process stopped, its
	// machine frozen: the kernel still accepts connections) must not hold the call for its
	// whole timeout while another node could answer. New sets it with several nodes.
	AttemptTimeout time.Duration

	// next is the index in URLs of the node to try first: the last one that answered.
	next atomic.Uint64
}

// DefaultTimeout is New's Timeout and its HTTP client's: as long as one request could take
// before there were several nodes.
const DefaultTimeout = 30 * time.Second

// DefaultAttemptTimeout is New's AttemptTimeout with several nodes: above the longest a live
// node takes to answer, 200 or 503 (its 10 s write and read timeouts, and the 2 s a strong
// read may wait for the log's head), so that only a node that cannot answer at all is left.
// A write repeated on the next node keeps its request id.
const DefaultAttemptTimeout = 15 * time.Second

// New returns a client of the orchestrator at baseURL, or of the nodes at a comma-separated
// list of base URLs ("http://a:8083,http://b:8083"), with sensible timeouts.
func New(baseURL, token string) *Client {
	c := &Client{
		URLs:    splitURLs(baseURL),
		Token:   token,
		Timeout: DefaultTimeout,
		HTTP:    &http.Client{Timeout: DefaultTimeout, Transport: transport()},
	}
	if len(c.URLs) > 1 {
		c.AttemptTimeout = DefaultAttemptTimeout
	}
	return c
}

// attempt bounds one attempt on one node by AttemptTimeout, if set.
func (c *Client) attempt(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.AttemptTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.AttemptTimeout)
}

// splitURLs splits a comma-separated list of base URLs, dropping blanks and trailing slashes.
// An empty list gives one empty URL, so that calls fail as they did before lists.
func splitURLs(list string) []string {
	var urls []string
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		urls = []string{""}
	}
	return urls
}

// transport keeps enough idle connections to the orchestrator for many concurrent requests
// (http.DefaultTransport keeps 2 per host, so under load most requests would dial anew), and
// gives up dialing a node that does not answer soon enough to try the next one.
func transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	t.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	return t
}

// dialTimeout bounds connecting to one node: a node that is down but not refusing (a host
// gone, packets dropped) must not eat a call's whole time.
const dialTimeout = 3 * time.Second

// Write sends one write. A 400 wraps rideshare.ErrInvalid, a 409 rideshare.ErrConstraint, a 503 or a
// transport failure rideshare.ErrUnavailable.
//
// A write without a RequestID gets a fresh one, the same on every attempt, so it can be sent
// again to another node after a 503 or a connection that broke while waiting for the answer:
// the orchestrator applies a request id once and answers a repeat with the first result.
func (c *Client) Write(ctx context.Context, w rideshare.Write) (rideshare.Result, error) {
	if w.RequestID == "" {
		w.RequestID = newRequestID()
	}
	var res rideshare.Result
	err := c.post(ctx, "/api/v1/db/write", w, jsonInto(&res), true)
	return res, err
}

// newRequestID is "c-" and, in hex, 8 bytes of the clock and 8 random bytes: like the
// orchestrator's own ids, consecutive ids sort together, so replicas add them at the end of
// their requests index instead of all over it; uniqueness comes from the random half.
func newRequestID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixNano()))
	_, _ = rand.Read(b[8:]) // crypto/rand.Read never fails (it crashes the program instead)
	return "c-" + hex.EncodeToString(b[:])
}

// ReadResult is the answer of a read: the rows and the sync-log sequence the slave had applied.
type ReadResult struct {
	Rows []rideshare.Row `json:"rows"`
	Seq  uint64          `json:"seq"`
}

// Read runs one query. Reads change nothing, so a read is tried again on the next node
// whatever happened to its connection.
func (c *Client) Read(ctx context.Context, r rideshare.Read) ([]rideshare.Row, error) {
	var res ReadResult
	err := c.post(ctx, "/api/v1/db/read", r, func(payload []byte) error {
		if decodeReadResult(payload, &res) == nil {
			return nil
		}
		if err := jsonInto(&res)(payload); err != nil {
			return err
		}
		normalize(&res)
		return nil
	}, true)
	if err != nil {
		return nil, err
	}
	return res.Rows, nil
}

// Clear empties every table. It carries no request id, so it moves to another node only when
// it cannot have been applied (a refused connection) or was refused (a 503).
func (c *Client) Clear(ctx context.Context) error {
	return c.post(ctx, "/api/v1/db/clear", struct{}{}, nil, false)
}

// jsonInto decodes an answer into out, numbers as json.Number (store.Result's int64 fields
// take them exactly).
func jsonInto(out any) func([]byte) error {
	return func(payload []byte) error {
		dec := json.NewDecoder(bytes.NewReader(payload))
		dec.UseNumber()
		return dec.Decode(out)
	}
}

// post sends body to path and hands a 200 answer to decode (nil: the answer is not read).
// resend says the request may be sent again after its connection broke once it was sent.
func (c *Client) post(ctx context.Context, path string, body any, decode func(payload []byte) error, resend bool) error {
	data, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	return c.failover(ctx, resend, func(base string) (outcome, error) {
		actx, cancel := c.attempt(ctx)
		defer cancel()
		req, err := http.NewRequestWithContext(actx, http.MethodPost, base+path, bytes.NewReader(data))
		if err != nil {
			return answered, err
		}
		req.Header.Set("Content-Type", "application/json")
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		resp, err := c.HTTP.Do(req)
		if err != nil {
			return failureOf(err), fmt.Errorf("%w: %v", rideshare.ErrUnavailable, err)
		}
		defer resp.Body.Close()
		payload, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			return lost, fmt.Errorf("%w: read answer: %v", rideshare.ErrUnavailable, err)
		}
		if resp.StatusCode == http.StatusOK {
			if decode == nil {
				return answered, nil
			}
			if err := decode(payload); err != nil {
				return answered, fmt.Errorf("decode answer of %s: %w", path, err)
			}
			return answered, nil
		}
		return statusError(resp.StatusCode, payload)
	})
}

// statusError is the error of a non-200 answer, and whether another node may do better: a
// 503 (or a proxy's 502 or 504 in front of a node) says this one cannot answer now.
func statusError(status int, payload []byte) (outcome, error) {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(payload, &e)
	if e.Error == "" {
		e.Error = strings.TrimSpace(string(payload))
	}
	if status == http.StatusGatewayTimeout || status == http.StatusBadGateway {
		status = http.StatusServiceUnavailable // a proxy in front of the orchestrator: try again
	}
	if status == http.StatusServiceUnavailable {
		return refused, rideshare.ErrorOfStatus(status, e.Error)
	}
	return answered, rideshare.ErrorOfStatus(status, e.Error)
}

// normalize turns json.Number values in rows into int64, as the store returns them.
func normalize(res *ReadResult) {
	for _, row := range res.Rows {
		for k, v := range row {
			if n, ok := v.(json.Number); ok {
				if i, err := n.Int64(); err == nil {
					row[k] = i
				}
			}
		}
	}
}

// Ping asks the orchestrator's /readyz whether it has a ready master and slaves; with several
// nodes, whether one of them says so. It makes no db/read, so readiness probes do not count
// towards autoscaling.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	return c.failover(ctx, true, func(base string) (outcome, error) {
		actx, cancel := c.attempt(ctx)
		defer cancel()
		req, err := http.NewRequestWithContext(actx, http.MethodGet, base+"/readyz", nil)
		if err != nil {
			return answered, err
		}
		resp, err := c.HTTP.Do(req)
		if err != nil {
			return failureOf(err), fmt.Errorf("%w: %v", rideshare.ErrUnavailable, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			err := fmt.Errorf("%w: orchestrator not ready: %s", rideshare.ErrUnavailable, strings.TrimSpace(string(body)))
			if resp.StatusCode == http.StatusServiceUnavailable {
				return refused, err
			}
			return answered, err
		}
		return answered, nil
	})
}
