package systemtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
)

// AMQP runs the stack's queues on the RabbitMQ of `make services`, in a virtual host of its
// own (created here, deleted at cleanup), so no message of another stack can reach it.
// RIDESHARE_SKIP_AMQP=1 skips the test instead.
func AMQP(t *testing.T) Option {
	t.Helper()
	if os.Getenv("RIDESHARE_SKIP_AMQP") == "1" {
		t.Skip("RIDESHARE_SKIP_AMQP=1")
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	vhost := "rideshare-e2e-" + hex.EncodeToString(b[:])
	RabbitMQCtl(t, "add_vhost", vhost)
	t.Cleanup(func() {
		if out, err := exec.Command("rabbitmqctl", "-q", "delete_vhost", vhost).CombinedOutput(); err != nil {
			t.Logf("delete vhost %s: %v %s", vhost, err, out)
		}
	})
	RabbitMQCtl(t, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
	return func(c *system.Config) { c.AMQP = "amqp://guest:guest@127.0.0.1:5672/" + vhost }
}

// RabbitMQCtl runs rabbitmqctl -q ARGS and returns its output, failing the test on an error.
func RabbitMQCtl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s (is RabbitMQ running? make services)", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ZK runs the stack's coordination on the ZooKeeper of `make services` (RIDESHARE_ZK, default
// 127.0.0.1:2181), under a root of its own.
func ZK(t *testing.T) Option {
	servers := os.Getenv("RIDESHARE_ZK")
	if servers == "" {
		servers = "127.0.0.1:2181"
	}
	return func(c *system.Config) {
		c.ZK = servers
		c.ZKRoot = fmt.Sprintf("/rideshare-test-%d", time.Now().UnixNano())
	}
}
