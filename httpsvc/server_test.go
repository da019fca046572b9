package httpsvc_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rideshare/rideshare/httpsvc"
)

func TestNewServerSetsEveryLimit(t *testing.T) {
	srv := httpsvc.NewServer(http.NotFoundHandler(), httpsvc.Limits{Read: time.Second})
	d := httpsvc.DefaultLimits
	if srv.ReadTimeout != time.Second || srv.ReadHeaderTimeout != d.ReadHeader || srv.WriteTimeout != d.Write ||
		srv.IdleTimeout != d.Idle || srv.MaxHeaderBytes != d.MaxHeaderBytes {
		t.Fatalf("server limits: read %v, header %v, write %v, idle %v, header bytes %d",
			srv.ReadTimeout, srv.ReadHeaderTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
	}
	for name, v := range map[string]time.Duration{"read header": d.ReadHeader, "read": d.Read, "write": d.Write, "idle": d.Idle} {
		if v <= 0 {
			t.Errorf("default %s timeout %v: a client could hold a connection forever", name, v)
		}
	}
	if d.Write <= 10*time.Second {
		t.Errorf("default write timeout %v does not outlast a write through a failover (10s)", d.Write)
	}
}

func TestServerRefusesHugeHeaders(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpsvc.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), httpsvc.Limits{})
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// net/http allows 4 KiB of slack above MaxHeaderBytes.
	go io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 2*httpsvc.DefaultLimits.MaxHeaderBytes)+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d for %d KiB of headers, want 431", resp.StatusCode, 2*httpsvc.DefaultLimits.MaxHeaderBytes>>10)
	}
}
