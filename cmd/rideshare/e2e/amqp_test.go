package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
	"github.com/rideshare/rideshare/cmd/rideshare/systemtest"
)

func withAMQP(t *testing.T) stackOpt { t.Helper(); return systemtest.AMQP(t) }

func rabbitmqctl(t *testing.T, args ...string) string {
	t.Helper()
	return systemtest.RabbitMQCtl(t, args...)
}

// The four queues exist on RabbitMQ once the stack is up.
func TestAMQPQueuesExist(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	opt := withAMQP(t)
	var vhost string
	st := mustStack(t, opt, func(c *system.Config) { vhost = c.AMQP[strings.LastIndex(c.AMQP, "/")+1:] })
	mustCall(t, 201, "PUT", st.GatewayURL+"/api/v1/users", map[string]string{"username": "amqp", "password": sha1hex(1)})
	mustCall(t, 200, "GET", st.GatewayURL+"/api/v1/users/amqp", nil)
	queues := rabbitmqctl(t, "list_queues", "-p", vhost, "name")
	for _, q := range []string{"writeQ", "readQ", "responseQ"} {
		if !strings.Contains(queues, q+"\n") {
			t.Errorf("queue %s missing: %s", q, queues)
		}
	}
	if ex := rabbitmqctl(t, "list_exchanges", "-p", vhost, "name"); !strings.Contains(ex, "syncQ") {
		t.Errorf("exchange syncQ missing: %s", ex)
	}
	// The orchestrator's broker metrics are on its /metrics (they were once built and never
	// registered).
	fams := scrape(t, st.OrchestratorURL)
	for _, name := range []string{"rideshare_broker_amqp_reconnects_total", "rideshare_broker_amqp_late_replies_total"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("orchestrator /metrics lacks %s", name)
		}
	}
}

// RabbitMQ's application stopped and started again in the middle of a write load: afterwards
// every acknowledged write is on every replica exactly once.
func TestRabbitMQRestartLosesNoAcknowledgedWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	if os.Getenv("RIDESHARE_AMQP") != "" {
		t.Skip("restarts only the RabbitMQ of scripts/services.sh")
	}
	st := mustStack(t, withAMQP(t), withSlaves(2))
	settled(t, st, 3)
	load := startWriteLoad(t, st, 4)
	load.waitAcks(t, 30, 30*time.Second)
	rabbitmqctl(t, "stop_app")
	restarted := false
	defer func() {
		if !restarted {
			exec.Command("rabbitmqctl", "-q", "start_app").Run()
		}
	}()
	rabbitmqctl(t, "start_app")
	restarted = true
	load.waitAcks(t, 50, 60*time.Second)
	acked := load.finish()
	checkReplicas(t, st, settled(t, st, 3), acked)
	t.Logf("%d writes acknowledged, %d not", len(acked), load.failed)
}
