// Package client calls the orchestrator's database API (POST /api/v1/db/write, /db/read,
// /db/clear) over HTTP. It is what the users and rides services use as their database.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/rideshare/rideshare"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client talks to one orchestrator.
type Client struct {
	// BaseURL is the orchestrator's address, e.g. http://127.0.0.1:8083.
	BaseURL string
	// Token, if set, is sent as "Authorization: Bearer <token>".
	Token string
	HTTP  *http.Client
}

// New returns a client with a sensible timeout.
func New(baseURL, token string) *Client {
	return &Client{
		BaseURL: strings.TrimRight(baseURL, "/"),
		Token:   token,
		HTTP:    &http.Client{Timeout: 30 * time.Second, Transport: transport()},
	}
}

// transport keeps enough idle connections to the orchestrator for many concurrent requests
// (http.DefaultTransport keeps 2 per host, so under load most requests would dial anew).
func transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	return t
}

// Write sends one write. A 400 wraps rideshare.ErrInvalid, a 409 rideshare.ErrConstraint, a 503 or a
// transport failure rideshare.ErrUnavailable.
func (c *Client) Write(ctx context.Context, w rideshare.Write) (rideshare.Result, error) {
	var res rideshare.Result
	err := c.post(ctx, "/api/v1/db/write", w, jsonInto(&res))
	return res, err
}

// ReadResult is the answer of a read: the rows and the sync-log sequence the slave had applied.
type ReadResult struct {
	Rows []rideshare.Row `json:"rows"`
	Seq  uint64          `json:"seq"`
}

// Read runs one query.
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
	})
	if err != nil {
		return nil, err
	}
	return res.Rows, nil
}

// Clear empties every table.
func (c *Client) Clear(ctx context.Context) error {
	return c.post(ctx, "/api/v1/db/clear", struct{}{}, nil)
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
func (c *Client) post(ctx context.Context, path string, body any, decode func(payload []byte) error) error {
	data, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", rideshare.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	payload, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%w: read answer: %v", rideshare.ErrUnavailable, err)
	}
	if resp.StatusCode == http.StatusOK {
		if decode == nil {
			return nil
		}
		if err := decode(payload); err != nil {
			return fmt.Errorf("decode answer of %s: %w", path, err)
		}
		return nil
	}
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(payload, &e)
	if e.Error == "" {
		e.Error = strings.TrimSpace(string(payload))
	}
	status := resp.StatusCode
	if status == http.StatusGatewayTimeout || status == http.StatusBadGateway {
		status = http.StatusServiceUnavailable // a proxy in front of the orchestrator: try again
	}
	return rideshare.ErrorOfStatus(status, e.Error)
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

// Ping asks the orchestrator's /readyz whether it has a ready master and slaves. It makes no
// db/read, so readiness probes do not count towards autoscaling.
func (c *Client) Ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", rideshare.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%w: orchestrator not ready: %s", rideshare.ErrUnavailable, strings.TrimSpace(string(body)))
	}
	return nil
}
