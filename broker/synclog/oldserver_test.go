package synclog_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/broker/synclog/logtest"
)

// With --nats the log lives on a server the operator runs, which may be older than the one
// `rideshare up` embeds: Debian's package is 2.9.10. Such a server ignores what it does not
// know (a consumer's filter_subjects came with 2.10: the consumer is made unfiltered, and the
// client refuses it), so the log passes its contract, and reads through a consumer, against
// the nats-server binary of oldServerBin too.
func TestContractOnAnOlderServer(t *testing.T) {
	bin := oldServerBin(t)
	logtest.Run(t, func(t *testing.T) logtest.Log { return openLogOn(t, startServer(t, bin)) })
}

// A read of more than SmallRead entries goes through a consumer; against the older server it
// delivers every entry and leaves no consumer behind.
func TestReadThroughAConsumerOnAnOlderServer(t *testing.T) {
	l := openLogOn(t, startServer(t, oldServerBin(t)))
	ctx := t.Context()
	const n = 3 * synclog.SmallRead
	var want [][]byte
	for i := range n {
		data := []byte(fmt.Sprintf("entry %d", i+1))
		if _, err := l.Append(ctx, uint64(i), data); err != nil {
			t.Fatal(err)
		}
		want = append(want, data)
	}
	var got [][]byte
	err := l.Read(ctx, 1, n, 50, func(msgs []synclog.Msg) error {
		for _, m := range msgs {
			if m.Seq != uint64(len(got)+1) {
				return fmt.Errorf("entry %d delivered after %d", m.Seq, len(got))
			}
			got = append(got, m.Data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("read %d entries, want %d", len(got), n)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("entry %d: %q, want %q", i+1, got[i], want[i])
		}
	}
	st, err := l.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Consumers != 0 {
		t.Errorf("%d consumers left on the server after the read", st.Consumers)
	}
}

// oldServerBin is $RIDESHARE_NATS_SERVER, else Debian's nats-server (on PATH or where its
// package puts it; scripts/services.sh installs it). Without either the test is skipped,
// unless RIDESHARE_REQUIRE_NATS_SERVER is set (`make test` sets it).
func oldServerBin(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs a nats-server process")
	}
	if b := os.Getenv("RIDESHARE_NATS_SERVER"); b != "" {
		return b
	}
	if b, err := exec.LookPath("nats-server"); err == nil {
		return b
	}
	if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
		return "/usr/sbin/nats-server"
	}
	if os.Getenv("RIDESHARE_REQUIRE_NATS_SERVER") != "" {
		t.Fatal("no nats-server binary: set RIDESHARE_NATS_SERVER or install Debian's nats-server (scripts/services.sh)")
	}
	t.Skip("no nats-server binary (Debian's package, or RIDESHARE_NATS_SERVER)")
	return ""
}

// startServer runs bin with JetStream on loopback until the test ends and returns its URL
// once it accepts clients.
func startServer(t *testing.T, bin string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	// The client retries until the server listens; it reports the first connection.
	connected := make(chan struct{})
	nc, err := nats.Connect(url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond), nats.ConnectHandler(func(*nats.Conn) { close(connected) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		t.Fatalf("nats-server %s does not answer on %s", bin, url)
	}
	return url
}

func openLogOn(t *testing.T, url string) *synclog.Log {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l, err := synclog.Open(t.Context(), nc, true)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
