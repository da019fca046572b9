package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
)

// Nothing unauthenticated reaches the broker: the stack's NATS server (the sync log, the
// queues, the coordination bucket) refuses a client without the deployment's token. The token
// was made on the first start and kept in the data directory, the owner's alone; the workers
// got it in their environment, not on their command line, which anyone can read with ps.
func TestNATSRefusesClientsWithoutTheToken(t *testing.T) {
	var data string
	st := mustStack(t, func(c *system.Config) { data = c.Data })
	token := st.NATS.Token
	if len(token) < 32 {
		t.Fatalf("the deployment's NATS token is %q: want a generated one", token)
	}

	for name, opts := range map[string][]nats.Option{"no token": nil, "a wrong token": {nats.Token("guess")}} {
		nc, err := nats.Connect(st.NATS.ClientURL(), append(opts, nats.Timeout(5*time.Second))...)
		if err == nil {
			nc.Close()
			t.Fatalf("a client with %s connected to the stack's NATS server", name)
		}
		if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			t.Fatalf("a client with %s was refused with %v, want an authorization violation", name, err)
		}
	}
	nc, err := nats.Connect(st.NATS.ClientURL(), nats.Token(token), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("with the token: %v", err)
	}
	nc.Close()

	path := filepath.Join(data, system.NATSTokenFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != token {
		t.Fatalf("%s does not hold the server's token", path)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: mode %v, %v; want 0600", path, fi.Mode().Perm(), err)
	}

	ws := workers(t, st)
	if len(ws) == 0 {
		t.Fatal("no workers")
	}
	for _, w := range ws {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", w.PID))
		if err != nil {
			t.Fatalf("worker %s: %v", w.ID, err)
		}
		if bytes.Contains(cmdline, []byte(token)) {
			t.Errorf("worker %s has the NATS token on its command line: %q", w.ID, cmdline)
		}
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", w.PID))
		if err != nil {
			t.Fatalf("worker %s: %v", w.ID, err)
		}
		if !bytes.Contains(environ, []byte(system.NATSTokenEnv+"="+token+"\x00")) {
			t.Errorf("worker %s did not get the token in its environment", w.ID)
		}
	}
}
