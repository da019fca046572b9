package natsq_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rideshare/rideshare/broker/natsq"
)

func TestLoadOrCreateToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "nats-token")
	tok, err := natsq.LoadOrCreateToken(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != 64 {
		t.Fatalf("token %q: want 64 hex digits", tok)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	again, err := natsq.LoadOrCreateToken(path)
	if err != nil || again != tok {
		t.Fatalf("second start: %q, %v; want the first token", again, err)
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := natsq.LoadOrCreateToken(path); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("a token file others can read: %v, want refused", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := natsq.LoadOrCreateToken(empty); err == nil {
		t.Fatal("an empty token file was accepted")
	}
}

// Nothing unauthenticated reaches the broker: a client without the token, or with another, is
// refused; the server's own in-process client and one with the token get in.
func TestServerRefusesClientsWithoutTheToken(t *testing.T) {
	srv := &natsq.Server{StoreDir: t.TempDir(), Port: -1, Token: "s3cret-token"}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for name, opts := range map[string][]nats.Option{
		"no token":    nil,
		"wrong token": {nats.Token("guess")},
	} {
		t.Run(name, func(t *testing.T) {
			nc, err := nats.Connect(srv.ClientURL(), append(opts, nats.Timeout(5*time.Second))...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
				t.Fatalf("refused with %v, want an authorization violation", err)
			}
		})
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.Token("s3cret-token"))
	if err != nil {
		t.Fatalf("with the token: %v", err)
	}
	nc.Close()
	in, err := srv.Connect("test", nil)
	if err != nil {
		t.Fatalf("in process: %v", err)
	}
	in.Close()
}

func TestParseSync(t *testing.T) {
	for in, want := range map[string]natsq.Sync{
		"always": {Always: true},
		"2m":     {Interval: 2 * time.Minute},
		"100ms":  {Interval: 100 * time.Millisecond},
	} {
		got, err := natsq.ParseSync(in)
		if err != nil || got != want {
			t.Errorf("ParseSync(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "never", "0s", "-1m", "sometimes"} {
		if _, err := natsq.ParseSync(bad); err == nil {
			t.Errorf("ParseSync(%q) accepted", bad)
		}
	}
}

// The setting reaches JetStream: with "always" every write is fsynced before it is
// acknowledged.
func TestServerSyncSetting(t *testing.T) {
	for _, sync := range []natsq.Sync{{Always: true}, {Interval: 5 * time.Second}} {
		srv := &natsq.Server{StoreDir: t.TempDir(), Port: -1, Sync: sync}
		if err := srv.Open(); err != nil {
			t.Fatal(err)
		}
		jc := srv.InProcess().JetStreamConfig()
		srv.Close()
		if jc == nil || jc.SyncAlways != sync.Always || (!sync.Always && jc.SyncInterval != sync.Interval) {
			t.Fatalf("sync %v: JetStream runs with %+v", sync, jc)
		}
	}
}
