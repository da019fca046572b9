package e2e

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/system"

	"github.com/rideshare/rideshare/httpsvc"
)

// trickle sends a POST whose body of n bytes comes one byte every gap, and returns how many
// body bytes the server took before it closed the connection.
func trickle(t *testing.T, base, path string, n int, gap time.Duration) int {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closed := make(chan struct{})
	go func() { // the server's answer, if any, then EOF when it closes the connection
		io.Copy(io.Discard, c)
		close(closed)
	}()
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, u.Host, n); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(gap)
	defer tick.Stop()
	for sent := 0; sent < n; sent++ {
		select {
		case <-closed:
			return sent
		case <-tick.C:
		}
		if _, err := c.Write([]byte{' '}); err != nil {
			return sent
		}
	}
	return n
}

// A client that sends its body byte by byte is cut off by every server of the stack, long
// before it has sent it all.
func TestSlowBodiesAreCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	st := mustStack(t, func(c *system.Config) { c.HTTPLimits = httpsvc.Limits{Read: time.Second} })
	const n, gap = 400, 25 * time.Millisecond // 10 s of body at that pace
	for name, target := range map[string]string{
		"gateway":      st.GatewayURL + "/api/v1/users",
		"users":        st.UsersURL + "/api/v1/users",
		"rides":        st.RidesURL + "/api/v1/rides",
		"orchestrator": st.OrchestratorURL + "/api/v1/db/write",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			u, _ := url.Parse(target)
			if sent := trickle(t, target, u.Path, n, gap); sent >= n {
				t.Fatalf("%s took all %d bytes of a trickled body: no read timeout", name, n)
			}
		})
	}
}
