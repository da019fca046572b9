package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rideshare/rideshare"
)

// Backup saves a consistent copy of the database (GET /api/v1/db/backup) to path and returns
// the sequence it holds. The copy is written beside path and renamed into place only once it
// is whole, so path never holds a partial backup. Backups can take minutes: the client's own
// timeout does not apply, ctx does.
func (c *Client) Backup(ctx context.Context, path string) (seq uint64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/api/v1/db/backup", nil)
	if err != nil {
		return 0, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := *c.HTTP
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", rideshare.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		payload, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(payload, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(payload))
		}
		return 0, rideshare.ErrorOfStatus(resp.StatusCode, e.Error)
	}
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
