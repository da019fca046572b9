package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	"github.com/rideshare/rideshare"
)

// Backup saves a consistent copy of the database (GET /api/v1/db/backup) to path and returns
// the sequence it holds. The copy is written beside path and renamed into place only once it
// is whole, so path never holds a partial backup. Backups can take minutes: the client's own
// timeouts do not apply to the copy, ctx does. Until a node starts sending one, the request
// moves from node to node on refused connections and 503s, for at most the client's Timeout
// if ctx has no deadline.
func (c *Client) Backup(ctx context.Context, path string) (seq uint64, err error) {
	hc := *c.HTTP
	hc.Timeout = 0
	fctx, cancel := c.bound(ctx)
	defer cancel()
	var resp *http.Response
	err = c.failover(fctx, true, func(base string) (outcome, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/db/backup", nil)
		if err != nil {
			return answered, err
		}
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		r, err := hc.Do(req)
		if err != nil {
			return failureOf(err), fmt.Errorf("%w: %v", rideshare.ErrUnavailable, err)
		}
		if r.StatusCode != http.StatusOK {
			defer r.Body.Close()
			payload, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
			return statusError(r.StatusCode, payload)
		}
		resp = r
		return answered, nil
	})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	seq, err = strconv.ParseUint(resp.Header.Get("X-Rideshare-Seq"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("backup answer without a valid X-Rideshare-Seq: %v", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".part-*")
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	n, err := io.Copy(f, resp.Body)
	if err != nil {
		return 0, fmt.Errorf("backup cut short after %d bytes: %w", n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return 0, fmt.Errorf("backup cut short: %d of %d bytes", n, resp.ContentLength)
	}
	if err = f.Sync(); err != nil {
		return 0, err
	}
	if err = f.Close(); err != nil {
		return 0, err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return 0, err
	}
	return seq, nil
}
